"""What each volume operation does, step by step, each step journaled with a deadline: the
storage driver's calls, and for attach and detach the hypervisor's, through the actor of the
VM's host. Every step is idempotent, so a task a crash cut short runs again from its start.

A step function returns the changes the volume's record takes on success; it raises on
failure, after compensating what it did (an attach whose hypervisor step failed unexports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.journal import Journal
from actors.messages import AttachDisk, DetachDisk, GetCapabilities, ResizeDisk
from actors.services import Services
from actors.volume_messages import (
    AttachParams,
    CreateVolumeParams,
    DeleteSnapshotParams,
    DeleteVolumeParams,
    DetachParams,
    ExtendParams,
    SnapshotVolumeParams,
    VolumeParams,
)
from cloudcore.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    describe,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorSystem
from cloudcore.store.records import VM, Volume
from hypervisor_drivers.types import IscsiDisk
from storage_drivers.base import Connection, StorageDriver, VolumeSpec

__all__ = ["ATTACHABLE", "MIB_PER_GIB", "Work", "host_path", "run"]

_log = get_logger("actors.volume")
MIB_PER_GIB = 1024
#: VM states in which a volume may be attached or detached (hot when RUNNING).
ATTACHABLE = frozenset({"RUNNING", "STOPPED", "PAUSED"})


@dataclass(slots=True)
class Work:
    """What a step function reaches."""

    services: Services
    system: ActorSystem
    driver: StorageDriver
    initiator_of: Callable[[str], str]
    journal: Journal

    @property
    def deadline(self) -> float:
        return self.services.settings.step_deadline


def host_path(vm: VM) -> str:
    return f"/user/dc/{vm.datacenter_id}/{vm.host_id}"


def disk_for(volume_id: str, connection: Connection, boot: bool = False) -> IscsiDisk:
    """The hypervisor's view of an export: QEMU's own initiator, named as the export allows;
    ``boot``: the VM's boot volume, its first boot device."""
    return IscsiDisk(
        host=connection.portal_host,
        port=connection.portal_port,
        iqn=connection.target_iqn,
        lun=connection.lun,
        chap_username=connection.chap_username,
        chap_password=connection.chap_secret,
        initiator=connection.initiator,
        serial=volume_id,
        boot_order=1 if boot else None,
    )


async def run(work: Work, volume: Volume, params: VolumeParams) -> dict[str, Any]:
    """Run ``params``' operation on ``volume``; the record's changes on success."""
    match params:
        case CreateVolumeParams():
            return await _create(work, volume, params)
        case AttachParams(vm_id=vm_id):
            return await _attach(work, volume, vm_id)
        case DetachParams():
            return await _detach(work, volume)
        case ExtendParams(size_gib=size):
            await work.journal.step(
                "extend",
                lambda: work.driver.extend_volume(volume.id, size * MIB_PER_GIB),
                deadline=work.deadline,
            )
            fault = None if volume.vm_id is None else await _tell_guest(work, volume, size)
            return {} if fault is None else {"fault": fault}
        case SnapshotVolumeParams(snapshot_id=snapshot_id):
            await work.journal.step(
                "snapshot",
                lambda: work.driver.create_snapshot(volume.id, snapshot_id),
                deadline=work.deadline,
            )
            return {}
        case DeleteSnapshotParams(snapshot_id=snapshot_id):
            await work.journal.step(
                "delete_snapshot",
                lambda: work.driver.delete_snapshot(snapshot_id),
                deadline=work.deadline,
            )
            return {}
        case DeleteVolumeParams():
            return await _delete(work, volume)
    raise AssertionError(f"unknown volume operation {params!r}")


async def _tell_guest(work: Work, volume: Volume, size_gib: int) -> str | None:
    """The VM the volume is attached to sees its new size (``blockResize`` on libvirt). The
    volume has grown whatever happens here: a hypervisor that cannot tell a running guest, or
    fails to, leaves it to the guest's next rescan, said in the volume's fault (returned)."""
    assert volume.vm_id is not None
    try:
        vm = await _vm(work, volume.vm_id)
    except (NotFound, Conflict):
        return None  # on no host: it reads the size when it next starts
    host = work.system.lookup(host_path(vm))
    capabilities = await host.ask(GetCapabilities(), timeout=work.deadline)
    if "resize_volume" not in capabilities:
        return f"grown to {size_gib} GiB; VM {vm.id}'s hypervisor cannot tell the running guest"
    message = ResizeDisk(vm_id=vm.id, serial=volume.id, size_bytes=size_gib * MIB_PER_GIB << 20)
    try:
        await work.journal.step(
            "resize",
            lambda: host.ask(message, timeout=work.deadline),
            deadline=work.deadline,
            data={"vm_id": vm.id},
        )
    except Exception as exc:
        _log.warning("volume.resize_not_told", volume_id=volume.id, vm_id=vm.id, error=str(exc))
        return f"grown to {size_gib} GiB; VM {vm.id} was not told: {describe(exc)}"
    return None


async def _create(work: Work, volume: Volume, params: CreateVolumeParams) -> dict[str, Any]:
    spec = VolumeSpec(volume_id=volume.id, size_mib=volume.size_gib * MIB_PER_GIB)
    driver = work.driver
    if params.snapshot_id is not None:
        snapshot_id = params.snapshot_id
        await work.journal.step(
            "create",
            lambda: driver.create_volume_from_snapshot(snapshot_id, spec),
            deadline=work.deadline,
            data={"snapshot_id": snapshot_id},
        )
    elif params.source_volume_id is not None:
        source_id = params.source_volume_id
        await work.journal.step(
            "create",
            lambda: driver.clone_volume(source_id, spec),
            deadline=work.deadline,
            data={"source_volume_id": source_id},
        )
    else:
        await work.journal.step(
            "create", lambda: driver.create_volume(spec), deadline=work.deadline
        )
    return {}


async def _vm(work: Work, vm_id: str) -> VM:
    vm = await work.services.store.get(VM, vm_id)
    if vm.host_id is None:
        raise Conflict(f"VM {vm_id} is on no host ({vm.state}): nothing to attach to")
    return vm


async def _attach(work: Work, volume: Volume, vm_id: str) -> dict[str, Any]:
    vm = await _vm(work, vm_id)
    assert vm.host_id is not None
    initiator = work.initiator_of(vm.host_id)
    connection: Connection = await work.journal.step(
        "export",
        lambda: work.driver.export_volume(volume.id, initiator),
        deadline=work.deadline,
        data={"host_id": vm.host_id, "initiator": initiator},
    )
    boot = vm.spec.boot_volume is not None and vm.spec.boot_volume.volume_id == volume.id
    disk = disk_for(volume.id, connection, boot)
    try:
        host = work.system.lookup(host_path(vm))
        device: str = await work.journal.step(
            "attach",
            lambda: host.ask(AttachDisk(vm_id=vm.id, disk=disk), timeout=work.deadline),
            deadline=work.deadline,
            data={"vm_id": vm.id, "target": connection.target_iqn},
        )
    except Exception as exc:
        await _compensate_export(work, volume, exc)
        raise
    return {"vm_id": vm.id, "target": connection.target_iqn, "device": device}


async def _compensate_export(work: Work, volume: Volume, cause: Exception) -> None:
    try:
        await work.journal.step(
            "unexport",
            lambda: work.driver.unexport_volume(volume.id),
            deadline=work.deadline,
            data={"because": describe(cause)},
        )
    except Exception as exc:  # left exported: the reconciler reports it
        _log.error("volume.unexport_failed", volume_id=volume.id, error=describe(exc))


async def _detach(work: Work, volume: Volume) -> dict[str, Any]:
    if volume.vm_id is not None:
        try:
            vm: VM | None = await work.services.store.get(VM, volume.vm_id)
        except NotFound:
            vm = None
        if vm is not None and vm.host_id is not None:
            host = work.system.lookup(host_path(vm))
            await work.journal.step(
                "detach",
                lambda: host.ask(DetachDisk(vm_id=vm.id, serial=volume.id), timeout=work.deadline),
                deadline=work.deadline,
                data={"vm_id": vm.id},
            )
    await work.journal.step(
        "unexport", lambda: work.driver.unexport_volume(volume.id), deadline=work.deadline
    )
    return {"vm_id": None, "target": None, "device": None}


async def _delete(work: Work, volume: Volume) -> dict[str, Any]:
    async def delete() -> None:
        try:
            await work.driver.delete_volume(volume.id)
        except IllegalTransition:  # still exported (a detach cut short): unexport first
            await work.driver.unexport_volume(volume.id)
            await work.driver.delete_volume(volume.id)

    await work.journal.step("delete", delete, deadline=work.deadline)
    return {"vm_id": None, "target": None, "device": None}
