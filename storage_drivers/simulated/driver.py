"""The simulated storage driver: volumes, snapshots and exports as records in memory.

It keeps the spec's promises about records (idempotent creates and deletes, one initiator per
export, fresh CHAP secrets, capacity) but holds no data and serves no iSCSI portal: a
``Connection`` it returns names the portal ``simulated.invalid``, which no initiator reaches.
Drivers made with the same ``pool`` in one process share one simulated backend, as drivers of
one storage server would; ``extra.total_mib`` is its size (default 1 TiB). Say so wherever it is
used: nothing here proves a volume works.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from cloudcore.errors import (
    AlreadyExists,
    BackendUnavailable,
    Conflict,
    IllegalTransition,
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
)
from cloudcore.logging import get_logger
from storage_drivers.base import (
    Capability,
    Capacity,
    Connection,
    SnapshotInfo,
    StorageDriver,
    StorageSettings,
    VolumeInfo,
    VolumeSpec,
    check_id,
)

__all__ = ["SimulatedStorageDriver"]

PORTAL = "simulated.invalid"
_CAPABILITIES = frozenset(Capability)


@dataclass
class _Backend:
    total_mib: int
    volumes: dict[str, int] = field(default_factory=dict)  # id -> size
    snapshots: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (volume, size)
    exports: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (initiator, secret)
    seconds: dict[str, str] = field(default_factory=dict)  # id -> a second initiator admitted


_BACKENDS: dict[str, _Backend] = {}


class SimulatedStorageDriver(StorageDriver):
    name = "simulated"

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__(settings)
        self._state = "new"
        self._total = int(settings.extra.get("total_mib", str(1024 * 1024)))
        self._log = get_logger(__name__, driver="simulated", pool=settings.pool)

    @property
    def capabilities(self) -> frozenset[Capability]:
        return _CAPABILITIES

    @property
    def _b(self) -> _Backend:
        if self._state != "connected":
            raise BackendUnavailable(
                f"the simulated driver for {self._settings.pool} is not connected"
            )
        return _BACKENDS[self._settings.pool]

    async def connect(self) -> None:
        if self._state == "closed":
            raise BackendUnavailable("this simulated driver is closed; make a new one")
        _BACKENDS.setdefault(self._settings.pool, _Backend(self._total))
        self._state = "connected"

    async def close(self) -> None:
        self._state = "closed"

    def _volume(self, volume_id: str) -> int:
        check_id("volume", volume_id)
        try:
            return self._b.volumes[volume_id]
        except KeyError:
            raise NotFound(f"no volume {volume_id} in pool {self._settings.pool}") from None

    def _info(self, volume_id: str) -> VolumeInfo:
        size = self._volume(volume_id)
        export = self._b.exports.get(volume_id)
        return VolumeInfo(volume_id=volume_id, size_mib=size, allocated_mib=0,
                          exported_to=export[0] if export else None)  # fmt: skip

    def _new(self, spec: VolumeSpec, minimum: int, what: str) -> VolumeInfo:
        if spec.size_mib < minimum:
            raise InvalidRequest(f"size_mib {spec.size_mib} is smaller than {what} ({minimum} MiB)")
        existing = self._b.volumes.get(spec.volume_id)
        if existing is not None and existing != spec.size_mib:
            raise AlreadyExists(f"volume {spec.volume_id} exists with {existing} MiB")
        if existing is None:
            if spec.size_mib > self._b.total_mib:
                raise InsufficientCapacity(f"{spec.size_mib} MiB is more than the pool holds")
            self._b.volumes[spec.volume_id] = spec.size_mib
        return self._info(spec.volume_id)

    async def create_volume(self, spec: VolumeSpec) -> VolumeInfo:
        return self._new(spec, 1, "the minimum")

    async def get_volume(self, volume_id: str) -> VolumeInfo:
        return self._info(volume_id)

    async def list_volumes(self) -> list[VolumeInfo]:
        return [self._info(v) for v in sorted(self._b.volumes)]

    async def delete_volume(self, volume_id: str) -> None:
        check_id("volume", volume_id)
        if volume_id in self._b.exports:
            raise IllegalTransition(f"volume {volume_id} is exported: unexport it first")
        self._b.volumes.pop(volume_id, None)

    async def extend_volume(self, volume_id: str, size_mib: int) -> VolumeInfo:
        self._require(Capability.EXTEND)
        current = self._volume(volume_id)
        if size_mib < current:
            raise InvalidRequest(
                f"volume {volume_id} is {current} MiB: cannot shrink to {size_mib}"
            )
        self._b.volumes[volume_id] = size_mib
        return self._info(volume_id)

    async def create_snapshot(self, volume_id: str, snapshot_id: str) -> SnapshotInfo:
        self._require(Capability.SNAPSHOT)
        check_id("snapshot", snapshot_id)
        size = self._volume(volume_id)
        found = self._b.snapshots.setdefault(snapshot_id, (volume_id, size))
        if found[0] != volume_id:
            raise AlreadyExists(f"snapshot {snapshot_id} is of volume {found[0]}")
        return SnapshotInfo(snapshot_id=snapshot_id, volume_id=volume_id, size_mib=found[1],
                            allocated_mib=0)  # fmt: skip

    async def list_snapshots(self) -> list[SnapshotInfo]:
        self._require(Capability.SNAPSHOT)
        return [SnapshotInfo(snapshot_id=s, volume_id=v, size_mib=n, allocated_mib=0)
                for s, (v, n) in sorted(self._b.snapshots.items())]  # fmt: skip

    async def delete_snapshot(self, snapshot_id: str) -> None:
        self._require(Capability.SNAPSHOT)
        check_id("snapshot", snapshot_id)
        self._b.snapshots.pop(snapshot_id, None)

    async def create_volume_from_snapshot(self, snapshot_id: str, spec: VolumeSpec) -> VolumeInfo:
        self._require(Capability.VOLUME_FROM_SNAPSHOT)
        check_id("snapshot", snapshot_id)
        if snapshot_id not in self._b.snapshots:
            raise NotFound(f"no snapshot {snapshot_id} in pool {self._settings.pool}")
        return self._new(spec, self._b.snapshots[snapshot_id][1], f"snapshot {snapshot_id}")

    async def clone_volume(self, source_id: str, spec: VolumeSpec) -> VolumeInfo:
        self._require(Capability.CLONE)
        return self._new(spec, self._volume(source_id), f"volume {source_id}")

    async def export_volume(self, volume_id: str, initiator: str) -> Connection:
        self._volume(volume_id)
        if not initiator or any(c.isspace() for c in initiator):
            raise InvalidRequest(f"initiator {initiator!r} is not an iSCSI name")
        export = self._b.exports.setdefault(volume_id, (initiator, secrets.token_hex(10)))
        if export[0] != initiator:
            raise Conflict(f"volume {volume_id} is exported to {export[0]}: unexport it first")
        self._log.info("volume.exported", volume_id=volume_id, initiator=initiator)
        return Connection(
            portal_host=PORTAL, portal_port=self._settings.portal_port,
            target_iqn=f"{self._settings.iqn_prefix}:{volume_id}", lun=1, initiator=initiator,
            chap_username=f"cc-{volume_id}", chap_secret=export[1],
        )  # fmt: skip

    async def unexport_volume(self, volume_id: str) -> None:
        check_id("volume", volume_id)
        self._b.seconds.pop(volume_id, None)
        if self._b.exports.pop(volume_id, None) is not None:
            self._log.info("volume.unexported", volume_id=volume_id)

    def admitted(self, volume_id: str) -> list[str]:
        """The initiators the volume's export lets in now (the first is ``exported_to``)."""
        export = self._b.exports.get(volume_id)
        second = self._b.seconds.get(volume_id)
        return [] if export is None else [export[0], *([second] if second else [])]

    async def export_also(self, volume_id: str, initiator: str) -> Connection:
        self._volume(volume_id)
        export = self._b.exports.get(volume_id)
        if export is None:
            raise Conflict(f"volume {volume_id} is not exported: export it first")
        if initiator != export[0]:
            second = self._b.seconds.setdefault(volume_id, initiator)
            if second != initiator:
                raise Conflict(f"volume {volume_id} admits {second} as well already")
        self._log.info("volume.exported_also", volume_id=volume_id, initiator=initiator)
        return Connection(
            portal_host=PORTAL, portal_port=self._settings.portal_port,
            target_iqn=f"{self._settings.iqn_prefix}:{volume_id}", lun=1, initiator=initiator,
            chap_username=f"cc-{volume_id}", chap_secret=export[1],
        )  # fmt: skip

    async def unexport_from(self, volume_id: str, initiator: str) -> None:
        check_id("volume", volume_id)
        admitted = self.admitted(volume_id)
        if initiator not in admitted:
            return
        if admitted == [initiator]:
            await self.unexport_volume(volume_id)
            return
        del self._b.seconds[volume_id]
        (kept,) = [i for i in admitted if i != initiator]
        self._b.exports[volume_id] = (kept, self._b.exports[volume_id][1])
        self._log.info("volume.unexported_from", volume_id=volume_id, initiator=initiator)

    async def capacity(self) -> Capacity:
        b = self._b
        provisioned = sum(b.volumes.values()) + sum(n for _, n in b.snapshots.values())
        return Capacity(total_mib=b.total_mib, used_mib=0, provisioned_mib=provisioned)
