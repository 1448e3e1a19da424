"""The storage service's Python API: create volumes on a pool with room, operate them, recover
them, look at pools, and compare the store with the backends.

It builds the storage part of the actor tree from the configured pools::

    /user/storage                  supervisor of the pools
    /user/storage/<pool id>        StoragePoolActor (the storage driver's connection)
        <volume id>                VolumeActor, started on its first message

and is what the HTTP gateway, the CLI and embedding programs call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from actors.journal import TaskWaiters
from actors.messages import RecoverVerb
from actors.orchestrator import _Group
from actors.paging import all_records
from actors.routing import (
    PortMessage,
    RoutedPools,
    RoutedReply,
    RoutedVolumeCreate,
    RoutedVolumeOperate,
    RoutedVolumeRecover,
)
from actors.services import Services
from actors.storage_pool import MIB_PER_GIB, StoragePoolActor
from actors.volume import task_data
from actors.volume_messages import (
    Activate,
    CreateVolumeParams,
    GetPool,
    ListBackend,
    PoolStatus,
    RecoverVolume,
    Release,
    RequestVolumeOperation,
    Reserve,
    VolumeParams,
)
from cloudcore.config import PoolSettings, StorageConfig
from cloudcore.errors import (
    Conflict,
    DatacenterUnavailable,
    InsufficientCapacity,
    InvalidRecord,
    NotFound,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorRef, ActorSystem
from cloudcore.store.records import (
    Datacenter,
    Host,
    IdempotencyKey,
    Task,
    TaskState,
    Volume,
    VolumeSnapshot,
    VolumeSnapshotState,
    VolumeState,
    new_id,
)
from cloudcore.store.usage import volume_usage
from storage_drivers.base import StorageDriver, StorageSettings

__all__ = ["Drift", "StorageService", "demo_pool", "initiator_name"]

_log = get_logger("actors.storage")

#: The port of the node that runs a datacenter if that is another one (None: this node).
PortOf = Callable[[str], Awaitable[ActorRef[PortMessage] | None]]

#: Makes the (unconnected) driver of a pool.
DriverFactory = Callable[[PoolSettings, StorageSettings], StorageDriver]


def _plugin(pool: PoolSettings, settings: StorageSettings) -> StorageDriver:
    from storage_drivers.registry import create_driver

    return create_driver(pool.driver, settings)


def initiator_name(config: StorageConfig, host: Host) -> str:
    """The iSCSI initiator name of a host's hypervisor: its ``iscsi.initiator`` capability, or
    ``<initiator_prefix>:<host id>``."""
    return host.capabilities.get("iscsi.initiator") or f"{config.initiator_prefix}:{host.id}"


def demo_pool(config: StorageConfig, datacenter: str) -> PoolSettings | None:
    """The simulated pool of the demo datacenter when no pool is configured."""
    if config.pools or config.demo_pool_gib <= 0:
        return None
    return PoolSettings(
        id=f"{datacenter}-pool",
        datacenter=datacenter,
        driver="simulated",
        extra={"total_mib": str(config.demo_pool_gib * MIB_PER_GIB)},
    )


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    """A difference between the store and a storage backend. ``kind``: ``orphan_volume`` (the
    backend holds a volume the store does not know), ``missing_volume`` (the store's volume is
    not on the backend), ``orphan_export`` (exported, the store says not attached),
    ``missing_export`` (attached, not exported), ``orphan_snapshot``, ``missing_snapshot``."""

    pool_id: str
    kind: str
    id: str
    detail: str = ""


class StorageService:
    """Start with ``await StorageService.start(system, services, config, pools, data_dir)``;
    stop with the actor system.

    A node runs the pools of the datacenters it runs; with :attr:`port_of` set (a node of a
    cluster), an operation on a volume of a datacenter another node runs is routed to that
    node's port (DatacenterUnavailable, a 503, at once when that node is down)."""

    def __init__(self, system: ActorSystem, services: Services, config: StorageConfig) -> None:
        self.system = system
        self.services = services
        self.store = services.store
        self.config = config
        self.pools: dict[str, PoolSettings] = {}
        self.port_of: PortOf | None = None

    async def _port(self, datacenter_id: str) -> ActorRef[PortMessage] | None:
        if self.port_of is None:
            return None
        return await self.port_of(datacenter_id)

    @classmethod
    async def start(
        cls,
        system: ActorSystem,
        services: Services,
        config: StorageConfig,
        pools: Sequence[PoolSettings],
        data_dir: str,
        driver_factory: DriverFactory = _plugin,
    ) -> StorageService:
        service = cls(system, services, config)
        root = system.spawn(_Group, name="storage")
        hosts: dict[str, Host] = {}

        def initiator_of(host_id: str) -> str:
            host = hosts.get(host_id)
            if host is None:
                return f"{config.initiator_prefix}:{host_id}"
            return initiator_name(config, host)

        async for host in _hosts(services):
            hosts[host.id] = host
        for pool in pools:
            path = pool.path or str(Path(data_dir) / "storage" / pool.id)
            settings = StorageSettings(
                pool=path,
                portal_host=pool.portal_host,
                portal_port=pool.portal_port,
                iqn_prefix=pool.iqn_prefix,
                extra=dict(pool.extra),
            )
            driver = driver_factory(pool, settings)
            system.spawn_under(
                root.path, StoragePoolActor, services, pool, driver, initiator_of, name=pool.id
            )
            service.pools[pool.id] = pool
        return service

    @property
    def waiters(self) -> TaskWaiters:
        return self.services.waiters

    def pool_ref(self, pool_id: str) -> ActorRef[Any]:
        if pool_id not in self.pools:
            raise NotFound(f"storage pool {pool_id} is not run on this node")
        ref: ActorRef[Any] = self.system.lookup(f"/user/storage/{pool_id}")
        return ref

    async def pool_status(self, datacenter_id: str | None = None) -> list[PoolStatus]:
        """The pools of ``datacenter_id`` (None: of every datacenter: those of a datacenter
        whose node is down are left out) as they are now."""
        if datacenter_id is None and self.port_of is not None:
            found = await self._local_pools(None)
            async for dc in all_records(self.store, Datacenter):
                try:
                    if (port := await self._port(dc.id)) is not None:
                        found.extend(await _routed_pools(port, dc.id))
                except DatacenterUnavailable:
                    continue
            return found
        if datacenter_id is not None and (port := await self._port(datacenter_id)) is not None:
            return await _routed_pools(port, datacenter_id)
        return await self._local_pools(datacenter_id)

    async def _local_pools(self, datacenter_id: str | None) -> list[PoolStatus]:
        found = []
        for pool in self.pools.values():
            if datacenter_id is None or pool.datacenter == datacenter_id:
                found.append(await self.pool_ref(pool.id).ask(GetPool()))
        return found

    async def _place(
        self, datacenter_id: str, tier: str, size_mib: int, pool_id: str | None = None
    ) -> PoolStatus:
        """Promise ``size_mib`` on the pool of ``tier`` in the datacenter with the most room
        (on ``pool_id`` when given: a copy lives on its source's pool)."""
        candidates = [
            s
            for s in await self.pool_status(datacenter_id)
            if s.tier == tier and s.connected and pool_id in (None, s.id)
        ]
        if not candidates:
            tiers = sorted({p.tier for p in self.pools.values() if p.datacenter == datacenter_id})
            raise InvalidRecord(
                f"tier: no reachable storage pool of tier {tier!r} in datacenter "
                f"{datacenter_id} (tiers there: {', '.join(tiers) or 'none'})"
            )
        refusals = []
        for status in sorted(candidates, key=lambda s: -s.room_mib):
            try:
                placed: PoolStatus = await self.pool_ref(status.id).ask(Reserve(size_mib=size_mib))
            except InsufficientCapacity as exc:
                refusals.append(str(exc))
                continue
            return placed
        raise InsufficientCapacity("; ".join(refusals))

    async def create_volume(
        self,
        *,
        tenant_id: str,
        datacenter_id: str,
        name: str,
        size_gib: int,
        tier: str = "standard",
        claim: IdempotencyKey | None = None,
        source: Volume | VolumeSnapshot | None = None,
    ) -> Task:
        """Place the volume on a pool with room, write it (CREATING) with its task and its
        quota in one transaction, and have its actor create it. The task at once. ``source``:
        a snapshot or a volume whose data it starts with (on the pool of that volume, of its
        tier, and at least its size: InvalidRecord naming ``size_gib`` otherwise). Routed to
        the node that runs the datacenter if that is another one."""
        port = await self._port(datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedVolumeCreate(
                    datacenter_id=datacenter_id,
                    tenant_id=tenant_id,
                    name=name,
                    size_gib=size_gib,
                    tier=tier,
                    claim=claim,
                    snapshot_id=source.id if isinstance(source, VolumeSnapshot) else None,
                    source_volume_id=source.id if isinstance(source, Volume) else None,
                )
            )
            assert reply.task is not None
            return reply.task
        params, pool_id = await self._source(source, size_gib)
        if pool_id is not None:
            tier = self.pools[pool_id].tier if pool_id in self.pools else tier
        pool = await self._place(datacenter_id, tier, size_gib * MIB_PER_GIB, pool_id)
        task_id = new_id("task-")  # the volume is born holding its task: a crash resumes it
        volume = Volume(
            id=new_id("vol-"),
            tenant_id=tenant_id,
            datacenter_id=datacenter_id,
            name=name,
            size_gib=size_gib,
            pool_id=pool.id,
            tier=tier,
            task_id=task_id,
        )
        task = Task(
            id=task_id,
            tenant_id=tenant_id,
            kind="volume.create",
            subject=f"volume/{volume.id}",
            state=TaskState.RUNNING,
            data={**task_data(params, volume), "pool_id": pool.id},
        )
        try:
            volume, task = await self.store.create_volume(
                volume, task, volume_usage(size_gib), claim=claim
            )
        except BaseException:
            self.pool_ref(pool.id).tell(Release(size_mib=size_gib * MIB_PER_GIB))
            raise
        ref = await self.volume_ref(volume)
        await ref.ask(RequestVolumeOperation(params=params, task=task))
        return task

    async def _source(
        self, source: Volume | VolumeSnapshot | None, size_gib: int
    ) -> tuple[CreateVolumeParams, str | None]:
        """The create's parameters and the pool it must go to."""
        if source is None:
            return CreateVolumeParams(), None
        if source.size_gib > size_gib:
            raise InvalidRecord(
                f"size_gib: {size_gib} is smaller than the source ({source.size_gib} GiB)"
            )
        if isinstance(source, VolumeSnapshot):
            if source.state is not VolumeSnapshotState.AVAILABLE:
                raise Conflict(f"snapshot {source.id} is {source.state}, not AVAILABLE")
            volume = await self.store.get(Volume, source.volume_id)
            return CreateVolumeParams(snapshot_id=source.id), volume.pool_id
        if source.state not in (VolumeState.AVAILABLE, VolumeState.ATTACHED):
            raise Conflict(f"volume {source.id} is {source.state}: it cannot be cloned now")
        return CreateVolumeParams(source_volume_id=source.id), source.pool_id

    async def volume_ref(self, volume: Volume) -> ActorRef[Any]:
        if volume.pool_id is None:
            raise NotFound(f"volume {volume.id} is on no storage pool")
        ref: ActorRef[Any] = await self.pool_ref(volume.pool_id).ask(Activate(volume_id=volume.id))
        return ref

    async def operate(self, volume_id: str, params: VolumeParams) -> Task:
        """Start an operation on a volume; its task at once (409 naming the state and what
        is allowed when the state does not allow it)."""
        volume = await self.store.get(Volume, volume_id)
        if volume.state is VolumeState.DELETED:
            raise NotFound(f"volume {volume_id} is deleted")
        port = await self._port(volume.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedVolumeOperate(
                    datacenter_id=volume.datacenter_id, volume_id=volume_id, params=params
                )
            )
            assert reply.task is not None
            return reply.task
        task: Task = await (await self.volume_ref(volume)).ask(
            RequestVolumeOperation(params=params)
        )
        return task

    async def recover(self, volume_id: str, verb: RecoverVerb) -> Any:
        """An operator's verdict on a volume in ERROR: the volume, or (``retry``, ``delete``)
        the task that runs."""
        volume = await self.store.get(Volume, volume_id)
        port = await self._port(volume.datacenter_id)
        if port is not None:
            reply: RoutedReply = await port.ask(
                RoutedVolumeRecover(
                    datacenter_id=volume.datacenter_id, volume_id=volume_id, verb=verb
                )
            )
            return reply.task if reply.task is not None else reply.volume
        return await (await self.volume_ref(volume)).ask(RecoverVolume(verb=verb))

    async def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        return await self.waiters.wait(self.store, task_id, timeout)

    async def reconcile(self, pool_id: str | None = None) -> list[Drift]:
        """Compare the store with each pool's backend: orphans and what is missing, reported
        (logged as ``storage.drift``), never changed here."""
        drift: list[Drift] = []
        for pool in self.pools.values():
            if pool_id is None or pool.id == pool_id:
                drift.extend(await self._reconcile_pool(pool.id))
        for d in drift:
            _log.warning("storage.drift", pool=d.pool_id, kind=d.kind, id=d.id, detail=d.detail)
        return drift

    async def _reconcile_pool(self, pool_id: str) -> list[Drift]:
        backend, snapshots = await self.pool_ref(pool_id).ask(ListBackend())
        known: dict[str, Volume] = {}
        async for volume in all_records(self.store, Volume, {"pool_id": pool_id}):
            if volume.state not in (VolumeState.DELETED, VolumeState.CREATING):
                known[volume.id] = volume
        drift = [
            Drift(pool_id=pool_id, kind="orphan_volume", id=v) for v in backend if v not in known
        ]
        for volume in known.values():
            if volume.id not in backend:
                if volume.state is not VolumeState.ERROR:
                    drift.append(Drift(pool_id=pool_id, kind="missing_volume", id=volume.id))
                continue
            exported = backend[volume.id]
            attached = volume.state is VolumeState.ATTACHED
            if exported is not None and not attached and volume.task_id is None:
                drift.append(
                    Drift(pool_id=pool_id, kind="orphan_export", id=volume.id, detail=exported)
                )
            elif exported is None and attached:
                drift.append(Drift(pool_id=pool_id, kind="missing_export", id=volume.id))
        drift.extend(await self._snapshot_drift(pool_id, set(known), snapshots))
        return drift

    async def _snapshot_drift(
        self, pool_id: str, volume_ids: set[str], on_backend: list[str]
    ) -> list[Drift]:
        stored, known = set(), set()
        async for snap in all_records(self.store, VolumeSnapshot):
            if snap.volume_id in volume_ids:
                known.add(snap.id)  # one in flight may or may not be on the backend yet
                if snap.state is VolumeSnapshotState.AVAILABLE:
                    stored.add(snap.id)
        return [
            Drift(pool_id=pool_id, kind="orphan_snapshot", id=s)
            for s in on_backend
            if s not in known
        ] + [
            Drift(pool_id=pool_id, kind="missing_snapshot", id=s)
            for s in sorted(stored - set(on_backend))
        ]


async def _routed_pools(port: ActorRef[PortMessage], datacenter_id: str) -> list[PoolStatus]:
    reply: RoutedReply = await port.ask(RoutedPools(datacenter_id=datacenter_id))
    return reply.pools or []


async def _hosts(services: Services) -> Any:
    async for host in all_records(services.store, Host):
        yield host
