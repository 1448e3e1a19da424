"""Finding the driver's datacenter, host, resource pool and datastore, and reading VM properties
in one round trip through the PropertyCollector (pyvmomi reads attributes one call each)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from cloudcore.errors import ConfigError, NotFound

__all__ = [
    "VM_PATHS",
    "HostRefs",
    "find_host",
    "host_vms_filter",
    "read_prop",
    "read_props",
    "vm_props",
    "wait_task",
]

#: The VM properties cloudcore reads.
VM_PATHS = [
    "name",
    "config.instanceUuid",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "runtime.powerState",
    "runtime.host",
]

_PC = vmodl.query.PropertyCollector


@dataclass(frozen=True)
class HostRefs:
    """The managed objects one driver works with."""

    datacenter: Any
    host: Any
    pool: Any
    datastore: Any


def _datacenter(content: Any, name: str | None) -> Any:
    datacenters = [e for e in content.rootFolder.childEntity if isinstance(e, vim.Datacenter)]
    if name is None:
        if len(datacenters) != 1:
            raise ConfigError("this vCenter has several datacenters: set driver.datacenter")
        return datacenters[0]
    for dc in datacenters:
        if dc.name == name:
            return dc
    raise NotFound(f"no datacenter {name!r} in this vCenter")


def _hosts(content: Any, datacenter: Any) -> list[Any]:
    view = content.viewManager.CreateContainerView(datacenter.hostFolder, [vim.HostSystem], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def find_host(content: Any, extra: dict[str, str]) -> HostRefs:
    """Blocking. The refs that ``extra`` (``datacenter``, ``host``, ``datastore``) names."""
    name = extra.get("host")
    if not name:
        raise ConfigError("a vSphere driver needs driver.host, the ESXi host's name in vCenter")
    datacenter = _datacenter(content, extra.get("datacenter"))
    hosts = [h for h in _hosts(content, datacenter) if h.name == name]
    if not hosts:
        raise NotFound(f"no ESXi host {name!r} in datacenter {datacenter.name!r}")
    host = hosts[0]
    stores = list(host.datastore)
    wanted = extra.get("datastore")
    if wanted is not None:
        stores = [ds for ds in stores if ds.name == wanted]
    if not stores:
        raise NotFound(f"host {name!r} has no datastore {wanted or ''}".rstrip())
    return HostRefs(
        datacenter=datacenter, host=host, pool=host.parent.resourcePool, datastore=stores[0]
    )


def host_vms_filter(host: Any) -> Any:
    """A filter spec for :data:`VM_PATHS` of every VM on ``host``."""
    traverse = _PC.TraversalSpec(name="hostVms", type=vim.HostSystem, path="vm", skip=False)
    return _PC.FilterSpec(
        objectSet=[_PC.ObjectSpec(obj=host, skip=True, selectSet=[traverse])],
        propSet=[_PC.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PATHS)],
    )


def vm_props(content: Any, obj: Any, *, single: bool = False) -> list[dict[str, Any]]:
    """Blocking. :data:`VM_PATHS` of every VM on a host (or of the VM ``obj`` when ``single``),
    each as a dict with ``_ref`` for the VM itself."""
    if single:
        spec = _PC.FilterSpec(
            objectSet=[_PC.ObjectSpec(obj=obj, skip=False)],
            propSet=[_PC.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PATHS)],
        )
    else:
        spec = host_vms_filter(obj)
    collector = content.propertyCollector
    result = collector.RetrievePropertiesEx([spec], _PC.RetrieveOptions())
    found: list[dict[str, Any]] = []
    while result is not None:
        for item in result.objects:
            props = {p.name: p.val for p in item.propSet}
            props["_ref"] = item.obj
            found.append(props)
        if not result.token:
            break
        result = collector.ContinueRetrievePropertiesEx(result.token)
    return found


def read_props(content: Any, obj: Any, paths: list[str]) -> dict[str, Any]:
    """Blocking. Properties of ``obj`` in one round trip; an unset one is left out. Unlike
    pyvmomi's attribute access (the private ``Fetch`` method), this works on vcsim for unset
    properties too."""
    spec = _PC.FilterSpec(
        objectSet=[_PC.ObjectSpec(obj=obj, skip=False)],
        propSet=[_PC.PropertySpec(type=type(obj), pathSet=paths)],
    )
    return {
        prop.name: prop.val
        for item in content.propertyCollector.RetrieveContents([spec])
        for prop in item.propSet
    }


def read_prop(content: Any, obj: Any, path: str) -> Any:
    """Blocking. One property of ``obj``, or None when unset."""
    return read_props(content, obj, [path]).get(path)


_TASK_POLL_FIRST, _TASK_POLL_MAX = 0.01, 0.5
_TASK_PATHS = ["info.state", "info.result", "info.error"]


def wait_task(content: Any, task: Any) -> Any:
    """Blocking. Wait for a vSphere task and return its result; its fault is raised as the
    pyvmomi fault it is. Reads the state, result and error of ``info`` in one call each poll,
    not the whole ``info``: pyvmomi refuses to read that of vcsim's snapshot tasks (their
    ``entity`` is a snapshot)."""
    delay = _TASK_POLL_FIRST
    while True:
        info = read_props(content, task, _TASK_PATHS)
        state = str(info.get("info.state"))
        if state == "success":
            return info.get("info.result")
        if state == "error":
            fault = info.get("info.error")
            raise fault if isinstance(fault, BaseException) else vmodl.RuntimeFault(msg=str(fault))
        time.sleep(delay)
        delay = min(delay * 2, _TASK_POLL_MAX)
