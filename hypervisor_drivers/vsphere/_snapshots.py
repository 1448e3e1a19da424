"""VM snapshots by name. A snapshot of a running VM keeps its memory, so reverting to it
returns the VM to RUNNING; the driver then enforces the snapshot's power state, because vcsim
reverts the tree only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cloudcore.errors import Conflict, NotFound
from hypervisor_drivers.types import GuestPower, SnapshotInfo
from hypervisor_drivers.vsphere._inventory import read_prop, wait_task
from hypervisor_drivers.vsphere._power import POWER

__all__ = ["create", "delete", "listed", "revert"]


def _walk(trees: list[Any] | None) -> Iterator[Any]:
    for tree in trees or []:
        yield tree
        yield from _walk(tree.childSnapshotList)


def _trees(content: Any, vm: Any) -> list[Any]:
    info = read_prop(content, vm, "snapshot")
    return list(_walk(info.rootSnapshotList if info is not None else None))


def _info(tree: Any) -> SnapshotInfo:
    return SnapshotInfo(
        name=tree.name,
        created_at=tree.createTime,
        power=POWER.get(str(tree.state), GuestPower.UNKNOWN),
    )


def _named(content: Any, vm: Any, name: str) -> Any | None:
    return next((t for t in _trees(content, vm) if t.name == name), None)


def create(content: Any, vm: Any, name: str) -> SnapshotInfo:
    if _named(content, vm, name) is not None:
        raise Conflict(f"VM {vm.config.instanceUuid} already has a snapshot named {name!r}")
    running = str(vm.runtime.powerState) == "poweredOn"
    wait_task(content, vm.CreateSnapshot_Task(name=name, memory=running, quiesce=False))
    tree = _named(content, vm, name)
    assert tree is not None
    return _info(tree)


def listed(content: Any, vm: Any) -> list[SnapshotInfo]:
    return sorted((_info(t) for t in _trees(content, vm)), key=lambda s: s.created_at)


def revert(content: Any, vm: Any, name: str) -> None:
    tree = _named(content, vm, name)
    if tree is None:
        raise NotFound(f"VM {vm.config.instanceUuid} has no snapshot named {name!r}")
    wait_task(content, tree.snapshot.RevertToSnapshot_Task())
    now = str(vm.runtime.powerState)
    if str(tree.state) == now:
        return
    if str(tree.state) == "poweredOn":
        wait_task(content, vm.PowerOnVM_Task())
    elif now == "poweredOn":
        wait_task(content, vm.PowerOffVM_Task())


def delete(content: Any, vm: Any, name: str) -> None:
    tree = _named(content, vm, name)
    if tree is not None:
        wait_task(content, tree.snapshot.RemoveSnapshot_Task(removeChildren=False))
