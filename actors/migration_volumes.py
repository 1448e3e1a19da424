"""The iSCSI volumes attached to a migrating VM follow it: shared network storage, so nothing
is copied, but each export lets in one host's initiator only.

- Before the hypervisor moves the VM (:func:`admit_target`, in the ``migrate`` step): each
  attached volume's pool admits the target host's initiator as well (the storage driver's
  ``export_also``: same target, same CHAP credentials). The hypervisor driver gets the disks as
  the target opens them (its initiator name), so the VM's definition on the target names it.
- As the migration ends (:func:`release`, after its record is written): the pool drops the
  source host's initiator when the VM moved, the target's when it did not (also when a crash
  cut the migration short and it is settled from the hypervisors). A failure to drop one is
  logged, not raised: the migration's outcome is written already; the export then still admits
  both hosts' initiators until the volume is detached.

The volume's record does not change: it names its VM, and the VM's record its host.
"""

from __future__ import annotations

from actors.volume_messages import ExportAlso, UnexportFrom
from actors.volume_work import disk_for
from cloudcore.errors import CloudcoreError, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import Volume, VolumeState
from hypervisor_drivers.types import IscsiDisk
from storage_drivers.types import Connection

__all__ = ["admit_target", "release"]

_log = get_logger("actors.migration")


async def _attached(store: Store, vm_id: str) -> list[Volume]:
    page = await store.list(Volume, where={"vm_id": vm_id}, limit=1000)
    return [v for v in page.items if v.state is not VolumeState.DELETED and v.pool_id]


async def admit_target(
    system: ActorSystem, store: Store, vm_id: str, target_id: str
) -> list[IscsiDisk]:
    """Each attached volume's export admits the target host too; the disks as it opens them."""
    disks: list[IscsiDisk] = []
    for volume in await _attached(store, vm_id):
        pool = system.lookup(f"/user/storage/{volume.pool_id}")
        connection: Connection = await pool.ask(ExportAlso(volume_id=volume.id, host_id=target_id))
        disks.append(disk_for(volume.id, connection))
        _log.info("migration.volume_admitted", vm_id=vm_id, volume_id=volume.id, host=target_id)
    return disks


async def release(system: ActorSystem, store: Store, vm_id: str, host_id: str) -> None:
    """Each attached volume's export stops admitting host ``host_id`` (errors logged)."""
    try:
        volumes = await _attached(store, vm_id)
    except CloudcoreError as exc:
        _log.error("migration.volumes_unreleased", vm_id=vm_id, error=describe(exc))
        return
    for volume in volumes:
        try:
            pool = system.lookup(f"/user/storage/{volume.pool_id}")
            await pool.ask(UnexportFrom(volume_id=volume.id, host_id=host_id))
        except CloudcoreError as exc:
            _log.error(
                "migration.volume_unreleased",
                vm_id=vm_id,
                volume_id=volume.id,
                host=host_id,
                error=describe(exc),
            )
            continue
        _log.info("migration.volume_released", vm_id=vm_id, volume_id=volume.id, host=host_id)
