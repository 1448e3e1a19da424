"""The storage pool actor (Abiquo's storage manager): one per storage server.

It holds the storage driver's connection and reconnects with backoff; keeps what the pool is
promised (the sizes of its volumes and snapshots, and of creates in flight) against its capacity
times its thin overcommit, so placement never promises more than the pool may hold; and owns
the Volume actors of its volumes, started on their first message from their records (virtual
actors). A backend that forgets its exports when it restarts (tgtd) gets them back on every
check: the driver re-creates what its own records hold, and what the store says is attached but
the backend does not export is exported again to its host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_never

from actors.journal import Journal
from actors.paging import all_records
from actors.services import Services
from actors.supervision import DOMAIN_STRATEGY
from actors.volume import VolumeActor, VolumeMessage
from actors.volume_messages import (
    Activate,
    ExportAlso,
    GetPool,
    ListBackend,
    PoolStatus,
    Release,
    Reserve,
    UnexportFrom,
    WatchVolumeTasks,
)
from actors.watchdog import Resume, undriven
from cloudcore.config import PoolSettings
from cloudcore.errors import BackendUnavailable, InsufficientCapacity, NotFound, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store.records import (
    Task,
    TaskState,
    Volume,
    VolumeSnapshot,
    VolumeSnapshotState,
    VolumeState,
)
from storage_drivers.base import Capacity, StorageDriver

__all__ = ["MIB_PER_GIB", "PoolMessage", "StoragePoolActor"]

_log = get_logger("actors.storage_pool")
MIB_PER_GIB = 1024
_MAX_RECONNECT_DELAY = 30.0
#: States a volume rests in with no operation to resume.
_RESTING = frozenset({VolumeState.AVAILABLE, VolumeState.ATTACHED, VolumeState.ERROR})


class _Check(Message, frozen=True, kw_only=True):
    """Connect (again): the backend is reachable and serves every export it should."""


PoolMessage = (
    GetPool
    | Reserve
    | Release
    | Activate
    | ListBackend
    | WatchVolumeTasks
    | ExportAlso
    | UnexportFrom
    | _Check
)


class StoragePoolActor(Actor[PoolMessage]):
    supervisor_strategy = DOMAIN_STRATEGY

    def __init__(
        self,
        services: Services,
        pool: PoolSettings,
        driver: StorageDriver,
        initiator_of: Callable[[str], str],
    ) -> None:
        self.services = services
        self.pool = pool
        self.driver = driver
        self.initiator_of = initiator_of  # host id -> its iSCSI initiator name
        self.connected = False
        self.capacity = Capacity(total_mib=0, used_mib=0, provisioned_mib=0)
        self.committed_mib = 0
        self.delay = services.settings.reconnect_delay

    async def started(self) -> None:
        self.committed_mib = await self._committed_in_store()
        self.context.self_ref.tell(_Check())
        self.context.schedule_periodic("check", self.services.settings.sweep_interval, _Check())
        watch = self.services.settings.watchdog_interval
        self.context.schedule_periodic("watchdog", watch, WatchVolumeTasks())

    async def stopping(self) -> None:
        await self.driver.close()

    async def receive(self, message: PoolMessage) -> Any:
        match message:
            case GetPool():
                return self.status()
            case Reserve(size_mib=size):
                return self._reserve(size)
            case Release(size_mib=size):
                self.committed_mib = max(0, self.committed_mib - size)
                return self.status()
            case Activate(volume_id=volume_id):
                return await self._activate(volume_id)
            case ListBackend():
                return await self._backend()
            case WatchVolumeTasks():
                return await self._watch()
            case ExportAlso(volume_id=volume_id, host_id=host_id):
                return await self.driver.export_also(volume_id, self.initiator_of(host_id))
            case UnexportFrom(volume_id=volume_id, host_id=host_id):
                await self.driver.unexport_from(volume_id, self.initiator_of(host_id))
            case _Check():
                await self._check()
            case _:
                assert_never(message)
        return None

    def status(self) -> PoolStatus:
        return PoolStatus(
            id=self.pool.id,
            datacenter_id=self.pool.datacenter,
            driver=self.pool.driver,
            tier=self.pool.tier,
            connected=self.connected,
            total_mib=self.capacity.total_mib,
            used_mib=self.capacity.used_mib,
            limit_mib=int(self.capacity.total_mib * self.pool.overcommit),
            committed_mib=self.committed_mib,
            overcommit=self.pool.overcommit,
        )

    def _reserve(self, size_mib: int) -> PoolStatus:
        status = self.status()
        if not self.connected:
            raise InsufficientCapacity(f"storage pool {self.pool.id} is not reachable now")
        if size_mib > status.room_mib:
            raise InsufficientCapacity(
                f"storage pool {self.pool.id} has {status.room_mib} MiB left of "
                f"{status.limit_mib} MiB (capacity x overcommit {self.pool.overcommit:g}), "
                f"asked {size_mib} MiB"
            )
        self.committed_mib += size_mib
        return self.status()

    async def _activate(self, volume_id: str) -> ActorRef[VolumeMessage]:
        ref: ActorRef[VolumeMessage] | None = self.context.child(volume_id)
        if ref is not None:
            return ref
        volume = await self.services.store.get(Volume, volume_id)
        if volume.pool_id != self.pool.id:
            raise NotFound(f"volume {volume_id} is not on storage pool {self.pool.id}")
        return self.context.spawn(
            VolumeActor,
            self.services,
            volume,
            self.driver,
            self.context.self_ref,
            self.initiator_of,
            name=volume_id,
        )

    async def _backend(self) -> tuple[dict[str, str | None], list[str]]:
        volumes = {v.volume_id: v.exported_to for v in await self.driver.list_volumes()}
        snapshots = [s.snapshot_id for s in await self.driver.list_snapshots()]
        return volumes, snapshots

    async def _check(self) -> None:
        try:
            await self.driver.connect()
            self.capacity = await self.driver.capacity()
        except BackendUnavailable as exc:
            if self.connected or self.delay == self.services.settings.reconnect_delay:
                _log.warning("pool.unreachable", pool=self.pool.id, error=describe(exc))
            self.connected = False
            self.context.schedule_once("reconnect", self.delay, _Check())
            self.delay = min(self.delay * 2, _MAX_RECONNECT_DELAY)
            return
        first = not self.connected
        self.connected = True
        self.delay = self.services.settings.reconnect_delay
        if first:
            _log.info("pool.connected", pool=self.pool.id, total_mib=self.capacity.total_mib)
            await self._resume_unsettled()
        await self._reexport()

    async def _resume_unsettled(self) -> None:
        """Have the actor of every volume a crash left between states resume its task (the
        watchdog ends the tasks of volumes at rest)."""
        async for volume in all_records(self.services.store, Volume, {"pool_id": self.pool.id}):
            if volume.state in _RESTING or volume.state is VolumeState.DELETED:
                continue
            if volume.task_id is None or volume.task_id in self.services.runners:
                continue
            ref = await self._activate(volume.id)
            ref.tell(Resume(task_id=volume.task_id))

    async def _watch(self) -> list[str]:
        """The watchdog of this pool's volume tasks (issue: every task ends by itself): each
        RUNNING with nothing driving it goes to its volume's actor, which resumes it or ends
        it; one whose volume is deleted is ended here."""
        store, grace = self.services.store, self.services.settings.watchdog_interval
        acted = []
        async for task in undriven(store, self.services.runners, grace):
            if not task.subject.startswith("volume/"):
                continue
            try:
                volume = await store.get(Volume, task.subject.removeprefix("volume/"))
            except NotFound:
                volume = None
            if volume is not None and volume.pool_id != self.pool.id:
                continue
            _log.warning("task.undriven", task_id=task.id, kind=task.kind, subject=task.subject)
            acted.append(task.id)
            try:
                await self._revive(task, volume)
            except Exception as exc:  # the next round tries again
                _log.error("task.revive_failed", task_id=task.id, error=describe(exc))
        return acted

    async def _revive(self, task: Task, volume: Volume | None) -> None:
        if volume is None or volume.state is VolumeState.DELETED:
            fault = f"interrupted; {task.subject} is deleted"
            await Journal(self.services.store, task, self.services.waiters).finish(
                TaskState.FAILED, fault
            )
            return
        ref = await self._activate(volume.id)
        await ref.ask(Resume(task_id=task.id), timeout=self.services.settings.step_deadline)

    async def _reexport(self) -> None:
        """Export again, to its host, every volume the store says is attached and the backend
        does not export (a backend that restarted and lost what its driver did not keep)."""
        exported, _ = await self._backend()
        where = {"pool_id": self.pool.id, "state": VolumeState.ATTACHED}
        async for volume in all_records(self.services.store, Volume, where):
            if exported.get(volume.id) is not None or volume.id not in exported:
                continue
            host_id = await self._host_of(volume)
            if host_id is None:
                continue
            try:
                await self.driver.export_volume(volume.id, self.initiator_of(host_id))
            except Exception as exc:  # the next check tries again
                _log.error("volume.reexport_failed", volume_id=volume.id, error=describe(exc))
            else:
                _log.warning("volume.reexported", volume_id=volume.id, host_id=host_id)

    async def _host_of(self, volume: Volume) -> str | None:
        from cloudcore.store.records import VM

        if volume.vm_id is None:
            return None
        try:
            return (await self.services.store.get(VM, volume.vm_id)).host_id
        except NotFound:
            return None

    async def _committed_in_store(self) -> int:
        store, total, ours = self.services.store, 0, set()
        async for volume in all_records(store, Volume, {"pool_id": self.pool.id}):
            if volume.state is not VolumeState.DELETED:
                total += volume.size_gib * MIB_PER_GIB
                ours.add(volume.id)
        async for snap in all_records(store, VolumeSnapshot):
            if snap.volume_id in ours and snap.state is not VolumeSnapshotState.ERROR:
                total += snap.size_gib * MIB_PER_GIB
        return total
