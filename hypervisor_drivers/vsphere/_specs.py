"""vSphere configuration specs built from cloudcore values, and facts read back from a VM.

cloudcore keeps what vSphere has no field for in the VM's ``extraConfig``: the live-resize
ceilings (``cloudcore.max_vcpus``, ``cloudcore.max_memory_mib``) and, per disk, the volume id
(``cloudcore.disk.<serial>`` = the disk's datastore path), so disks are found by serial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from hypervisor_drivers.types import DomainSpec, FileDisk, NicSpec

__all__ = [
    "PORTGROUP",
    "VmFacts",
    "config_spec",
    "disk_add",
    "disk_remove",
    "nic_add",
    "nic_devices",
    "nic_remove",
    "nic_source",
    "vm_facts",
]

MAX_VCPUS = "cloudcore.max_vcpus"
MAX_MEMORY = "cloudcore.max_memory_mib"
DISK_PREFIX = "cloudcore.disk."
_CONTROLLER_KEY = -100  # a placeholder key, replaced by the server when the controller is added
_SCSI_UNITS = [u for u in range(16) if u != 7]  # unit 7 is the controller itself
_NIC_MODELS: dict[str, type[Any]] = {
    "e1000": vim.vm.device.VirtualE1000,
    "e1000e": vim.vm.device.VirtualE1000e,
}
_Add = vim.vm.device.VirtualDeviceSpec.Operation.add
_Remove = vim.vm.device.VirtualDeviceSpec.Operation.remove


@dataclass(frozen=True)
class VmFacts:
    """What cloudcore reads from a VM's configuration."""

    max_vcpus: int
    max_memory_mib: int
    disks: dict[str, Any]  # serial -> VirtualDisk device
    controller: Any | None  # the first SCSI controller
    used_units: set[int]


def _option(key: str, value: str) -> Any:
    return vim.option.OptionValue(key=key, value=value)


def _disk_device(disk: FileDisk, controller_key: int, unit: int, key: int) -> Any:
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=disk.path,
        diskMode="independent_nonpersistent" if disk.readonly else "persistent",
    )
    return vim.vm.device.VirtualDisk(
        key=key, controllerKey=controller_key, unitNumber=unit, backing=backing
    )


def disk_add(disk: FileDisk, controller_key: int, unit: int, key: int = -1) -> Any:
    """The device change that attaches ``disk`` (referenced, never created)."""
    return vim.vm.device.VirtualDeviceSpec(
        operation=_Add, device=_disk_device(disk, controller_key, unit, key)
    )


def disk_remove(device: Any) -> Any:
    """The device change that detaches ``device`` and leaves its file alone."""
    return vim.vm.device.VirtualDeviceSpec(operation=_Remove, device=device)


#: The key of a cloud network's ``extra`` naming its vSphere port group.
PORTGROUP = "vsphere.portgroup"


def _nic_add(nic: NicSpec, key: int) -> Any:
    card = _NIC_MODELS.get(nic.model, vim.vm.device.VirtualVmxnet3)(key=key)
    card.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
        deviceName=nic.name_on(PORTGROUP)
    )
    if nic.mac is not None:
        card.addressType, card.macAddress = "manual", nic.mac.lower()
    return vim.vm.device.VirtualDeviceSpec(operation=_Add, device=card)


def nic_add(nic: NicSpec) -> Any:
    """The device change that adds ``nic`` (on its port group, with its MAC)."""
    return _nic_add(nic, key=-300)


def nic_remove(device: Any) -> Any:
    return vim.vm.device.VirtualDeviceSpec(operation=_Remove, device=device)


def nic_devices(config: Any) -> list[Any]:
    """The VM's network cards, in device order."""
    devices = list(config.hardware.device or [])
    return [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]


def nic_source(device: Any) -> str:
    return str(getattr(device.backing, "deviceName", "") or "")


def _sizes(spec: DomainSpec) -> dict[str, Any]:
    max_vcpus = spec.max_vcpus or spec.vcpus
    max_memory = spec.max_memory_mib or spec.memory_mib
    return {
        "name": spec.name,
        "numCPUs": spec.vcpus,
        "memoryMB": spec.memory_mib,
        "cpuHotAddEnabled": max_vcpus > spec.vcpus,
        "memoryHotAddEnabled": max_memory > spec.memory_mib,
        "extraConfig": [
            _option(MAX_VCPUS, str(max_vcpus)),
            _option(MAX_MEMORY, str(max_memory)),
            *(
                _option(DISK_PREFIX + d.serial, d.path)
                for d in spec.disks
                if isinstance(d, FileDisk) and d.serial
            ),
        ],
    }


def config_spec(spec: DomainSpec, datastore: str) -> Any:
    """The spec of a new VM: sizes, one SCSI controller with the disks, the NICs."""
    changes = [
        vim.vm.device.VirtualDeviceSpec(
            operation=_Add,
            device=vim.vm.device.ParaVirtualSCSIController(
                key=_CONTROLLER_KEY, busNumber=0, sharedBus="noSharing"
            ),
        )
    ]
    for index, disk in enumerate(spec.disks):
        assert isinstance(disk, FileDisk)
        changes.append(disk_add(disk, _CONTROLLER_KEY, _SCSI_UNITS[index], key=-(index + 1)))
    for index, nic in enumerate(spec.nics):
        changes.append(_nic_add(nic, key=-(200 + index)))
    return vim.vm.ConfigSpec(
        uuid=spec.uuid,
        instanceUuid=spec.uuid,
        guestId=spec.extra.get("guest_id", "otherGuest64"),
        files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"),
        deviceChange=changes,
        **_sizes(spec),
    )


def redefine_spec(spec: DomainSpec, facts: VmFacts) -> Any:
    """The spec that turns an existing VM into ``spec``: sizes, and disks added or removed by
    serial (NICs are kept)."""
    wanted = {d.serial: d for d in spec.disks if isinstance(d, FileDisk) and d.serial}
    changes = [disk_remove(dev) for serial, dev in facts.disks.items() if serial not in wanted]
    stale = [_option(DISK_PREFIX + serial, "") for serial in facts.disks if serial not in wanted]
    free = [u for u in _SCSI_UNITS if u not in facts.used_units]
    controller_key = facts.controller.key if facts.controller is not None else _CONTROLLER_KEY
    if facts.controller is None and wanted:
        changes.append(
            vim.vm.device.VirtualDeviceSpec(
                operation=_Add, device=vim.vm.device.ParaVirtualSCSIController(key=_CONTROLLER_KEY)
            )
        )
    added = [disk for serial, disk in wanted.items() if serial not in facts.disks]
    for index, disk in enumerate(added):
        changes.append(disk_add(disk, controller_key, free[index], key=-(index + 1)))
    sizes = _sizes(spec)
    sizes["extraConfig"] = sizes["extraConfig"] + stale
    return vim.vm.ConfigSpec(deviceChange=changes, **sizes)


def vm_facts(config: Any) -> VmFacts:
    """The cloudcore facts in a VM's ``config`` (a ``vim.vm.ConfigInfo``)."""
    extra = {o.key: str(o.value) for o in (config.extraConfig or [])}
    devices = list(config.hardware.device or [])
    controllers = [d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)]
    controller = controllers[0] if controllers else None
    disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    by_path = {getattr(d.backing, "fileName", None): d for d in disks}
    serials = {
        key.removeprefix(DISK_PREFIX): by_path[path]
        for key, path in extra.items()
        if key.startswith(DISK_PREFIX) and path in by_path
    }
    used = {
        d.unitNumber
        for d in disks
        if controller is not None and d.controllerKey == controller.key and d.unitNumber is not None
    }
    return VmFacts(
        max_vcpus=int(extra.get(MAX_VCPUS, config.hardware.numCPU)),
        max_memory_mib=int(extra.get(MAX_MEMORY, config.hardware.memoryMB)),
        disks=serials,
        controller=controller,
        used_units=used,
    )


def free_unit(facts: VmFacts) -> int:
    """The lowest free unit on the VM's SCSI controller."""
    for unit in _SCSI_UNITS:
        if unit not in facts.used_units:
            return unit
    raise ValueError("the VM's SCSI controller has no free unit")
