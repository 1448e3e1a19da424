"""What a Volume actor checks before an operation starts, so a request that cannot succeed is
refused whole (nothing written, nothing reserved), naming the field or the state at fault."""

from __future__ import annotations

from actors.volume_messages import (
    AttachParams,
    DeleteSnapshotParams,
    DeleteVolumeParams,
    DetachParams,
    ExtendParams,
    VolumeParams,
)
from actors.volume_work import ATTACHABLE
from cloudcore.errors import Conflict, IllegalTransition, InvalidRecord, NotFound
from cloudcore.store import Store
from cloudcore.store.records import VM, VMState, Volume, VolumeSnapshot, VolumeSnapshotState

__all__ = ["check_request"]


async def check_request(store: Store, volume: Volume, params: VolumeParams) -> None:
    match params:
        case AttachParams(vm_id=vm_id):
            await _check_vm(store, volume, vm_id)
        case ExtendParams(size_gib=size) if size <= volume.size_gib:
            raise InvalidRecord(
                f"size_gib: {size} is not larger than the volume's {volume.size_gib} GiB "
                "(volumes only grow)"
            )
        case DeleteSnapshotParams(snapshot_id=snapshot_id):
            snap = await _snapshot(store, volume, snapshot_id)
            if snap.state not in (VolumeSnapshotState.AVAILABLE, VolumeSnapshotState.ERROR):
                raise Conflict(f"snapshot {snapshot_id} is {snap.state}: wait for it")
        case DetachParams():
            await _check_boot_detach(store, volume)
        case DeleteVolumeParams():
            page = await store.list(VolumeSnapshot, where={"volume_id": volume.id}, limit=20)
            if page.items:
                names = ", ".join(s.id for s in page.items)
                raise Conflict(f"volume {volume.id} has snapshots ({names}): delete them first")
        case _:
            pass


async def _check_vm(store: Store, volume: Volume, vm_id: str) -> None:
    try:
        vm = await store.get(VM, vm_id)
    except NotFound:
        vm = None
    if vm is None or vm.tenant_id != volume.tenant_id or vm.state is VMState.DELETED:
        raise InvalidRecord(f"vm_id: no VM {vm_id!r}")
    if vm.datacenter_id != volume.datacenter_id:
        raise InvalidRecord(
            f"vm_id: VM {vm_id} is in datacenter {vm.datacenter_id}, the volume in "
            f"{volume.datacenter_id}"
        )
    if _booting_from(vm, volume):  # the deploy attaches the VM's boot volume before it starts
        return
    if vm.host_id is None or vm.state not in ATTACHABLE or vm.task_id is not None:
        raise IllegalTransition(
            f"cannot attach volume {volume.id} to VM {vm_id}: the VM is {vm.state}"
            + (" with a task running" if vm.task_id is not None else "")
            + f"; a volume attaches to a VM that is {', '.join(sorted(ATTACHABLE))}"
        )


#: States of a VM in which its boot volume may be detached: its delete, or its deploy letting
#: go of a volume it could not boot from.
_BOOT_RELEASED = frozenset({VMState.DELETING, VMState.DELETED, VMState.PROVISIONING})


async def _check_boot_detach(store: Store, volume: Volume) -> None:
    """A VM's boot volume stays attached while the VM lives (it boots from it)."""
    if volume.vm_id is None:
        return
    try:
        vm = await store.get(VM, volume.vm_id)
    except NotFound:
        return
    boot = vm.spec.boot_volume
    if boot is None or boot.volume_id != volume.id or vm.state in _BOOT_RELEASED:
        return
    raise IllegalTransition(
        f"cannot detach volume {volume.id}: it is the boot volume of VM {vm.id} ({vm.state}); "
        "it is detached when the VM is deleted"
    )


def _booting_from(vm: VM, volume: Volume) -> bool:
    """Whether ``vm`` is being provisioned on its host with ``volume`` as its boot volume."""
    boot = vm.spec.boot_volume
    return (
        boot is not None
        and boot.volume_id == volume.id
        and vm.host_id is not None
        and vm.state is VMState.PROVISIONING
    )


async def _snapshot(store: Store, volume: Volume, snapshot_id: str) -> VolumeSnapshot:
    try:
        snap = await store.get(VolumeSnapshot, snapshot_id)
    except NotFound:
        snap = None
    if snap is None or snap.volume_id != volume.id:
        raise NotFound(f"snapshot {snapshot_id} of volume {volume.id} not found")
    return snap
