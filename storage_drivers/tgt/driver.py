"""The tgt storage driver: sparse file-backed LUNs served by Linux's user-space target, tgtd.

One volume is one sparse file under the pool directory and, while exported, one iSCSI target
named ``{iqn_prefix}:{volume_id}`` with the file as LUN 1, one CHAP account of its own with a
generated secret, and an ACL letting in only the initiator it was exported to. Snapshots and
clones are sparse file copies (independent of their source). tgtd is driven through ``tgtadm``
subprocesses with deadlines.

Settings ``extra``: ``control_port`` (tgtd's ``-C``; default tgtd's own), ``tgtadm`` (the
binary), ``timeout_s`` (per tgtadm run, default 30), ``copy_timeout_s`` (per copy, default 600).

tgtd keeps targets only in memory: ``connect`` re-creates every export the pool's records hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import msgspec

from cloudcore.errors import (
    AlreadyExists,
    BackendUnavailable,
    ConfigError,
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
from storage_drivers.tgt._client import Target, Tgtadm
from storage_drivers.tgt._errors import TgtadmRefused
from storage_drivers.tgt._pool import MIB, ExportRecord, Pool

__all__ = ["TgtDriver"]

_LUN = 1  # LUN 0 is tgt's controller
_CAPABILITIES = frozenset(Capability)  # every optional feature


class TgtDriver(StorageDriver):
    name = "tgt"

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__(settings)
        extra = settings.extra
        try:
            port = int(extra["control_port"]) if extra.get("control_port") else None
            timeout = float(extra.get("timeout_s", "30"))
            self._copy_timeout = float(extra.get("copy_timeout_s", "600"))
        except ValueError as exc:
            raise ConfigError(f"tgt storage driver settings: {exc}") from exc
        self._tgtadm = Tgtadm(port, timeout, extra.get("tgtadm", "tgtadm"))
        self._pool = Pool(Path(settings.pool))
        self._locks: dict[str, asyncio.Lock] = {}
        self._tid_lock = asyncio.Lock()
        self._state = "new"  # new -> connected -> closed
        self._log = get_logger(__name__, driver="tgt", pool=settings.pool)

    @property
    def capabilities(self) -> frozenset[Capability]:
        return _CAPABILITIES

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._state == "closed":
            raise BackendUnavailable("this tgt driver is closed; make a new one")
        await asyncio.to_thread(self._pool.prepare)
        targets = await self._tgtadm.targets()  # BackendUnavailable when tgtd is not there
        self._state = "connected"
        restored = 0
        for volume_id in self._pool.exported_ids():
            async with self._lock(volume_id):
                record = self._pool.read_export(volume_id)
                if record is None:
                    continue
                if not self._pool.volume_path(volume_id).exists():
                    self._pool.remove_export(volume_id)
                    continue
                if self._find(targets, volume_id) is None:
                    restored += 1
                await self._ensure_target(volume_id, record)
        self._log.info("storage.connected", restored_exports=restored)

    async def close(self) -> None:
        self._state = "closed"

    def _check(self) -> None:
        if self._state != "connected":
            raise BackendUnavailable(f"the tgt driver for {self._settings.pool} is not connected")

    @contextlib.asynccontextmanager
    async def _lock(self, *volume_ids: str) -> AsyncIterator[None]:
        """One operation at a time per volume in this process; several volumes are locked in
        sorted order, so two clones in opposite directions cannot deadlock."""
        async with contextlib.AsyncExitStack() as stack:
            for volume_id in sorted(set(volume_ids)):
                await stack.enter_async_context(self._locks.setdefault(volume_id, asyncio.Lock()))
            yield

    # -- volumes -----------------------------------------------------------------------------

    async def create_volume(self, spec: VolumeSpec) -> VolumeInfo:
        self._check()
        async with self._lock(spec.volume_id):
            existing = self._existing(spec)
            if existing is not None:
                return existing
            self._check_room(spec.size_mib)
            await self._pool.create(self._pool.volume_path(spec.volume_id), spec.size_mib)
            info = self._info(spec.volume_id, [])  # new: exported nowhere, no tgtadm needed
        self._log.info("volume.created", volume_id=spec.volume_id, size_mib=spec.size_mib)
        return info

    async def get_volume(self, volume_id: str) -> VolumeInfo:
        self._check()
        check_id("volume", volume_id)
        return self._info(volume_id, await self._tgtadm.targets())

    async def list_volumes(self) -> list[VolumeInfo]:
        self._check()
        targets = await self._tgtadm.targets()
        found = []
        for volume_id in self._pool.volume_ids():
            try:
                found.append(self._info(volume_id, targets))
            except NotFound:  # deleted meanwhile
                continue
        return found

    async def delete_volume(self, volume_id: str) -> None:
        self._check()
        check_id("volume", volume_id)
        async with self._lock(volume_id):
            # The export record is written before tgtd hears of an export and removed after
            # tgtd forgot it: without one, tgtd holds no target of this volume (no tgtadm run).
            if self._pool.read_export(volume_id) is not None:
                raise IllegalTransition(f"volume {volume_id} is exported: unexport it first")
            self._pool.volume_path(volume_id).unlink(missing_ok=True)
        self._log.info("volume.deleted", volume_id=volume_id)

    async def extend_volume(self, volume_id: str, size_mib: int) -> VolumeInfo:
        self._require(Capability.EXTEND)
        self._check()
        check_id("volume", volume_id)
        async with self._lock(volume_id):
            current = self._info(volume_id, [])
            if size_mib < current.size_mib:
                raise InvalidRequest(
                    f"volume {volume_id} is {current.size_mib} MiB: cannot shrink to {size_mib}"
                )
            if size_mib == current.size_mib:
                return await self.get_volume(volume_id)
            self._check_room(size_mib - current.size_mib)
            target = self._find(await self._tgtadm.targets(), volume_id)
            if target is not None:
                self._require(Capability.ONLINE_EXTEND)
            path = self._pool.volume_path(volume_id)
            await self._pool.grow(path, size_mib)
            if target is not None:
                # tgt cannot resize a LUN in place: re-create it (allowed with sessions open).
                await self._ignoring("no_lun", self._tgtadm.delete_lun(target.tid, _LUN))
                await self._tgtadm.new_lun(target.tid, _LUN, str(path))
        self._log.info("volume.extended", volume_id=volume_id, size_mib=size_mib)
        return await self.get_volume(volume_id)

    # -- snapshots and copies ----------------------------------------------------------------

    async def create_snapshot(self, volume_id: str, snapshot_id: str) -> SnapshotInfo:
        self._require(Capability.SNAPSHOT)
        self._check()
        check_id("volume", volume_id)
        check_id("snapshot", snapshot_id)
        async with self._lock(volume_id):
            found = self._pool.find_snapshot(snapshot_id)
            if found is not None and found[0] != volume_id:
                raise AlreadyExists(f"snapshot {snapshot_id} is of volume {found[0]}")
            if found is None:
                source = self._info(volume_id, [])
                self._check_room(source.size_mib)
                dest = self._pool.snapshot_path(snapshot_id, volume_id)
                await self._pool.copy(
                    self._pool.volume_path(volume_id), dest, source.size_mib, self._copy_timeout
                )
                self._log.info("snapshot.created", volume_id=volume_id, snapshot_id=snapshot_id)
        return self._snapshot(snapshot_id)

    async def list_snapshots(self) -> list[SnapshotInfo]:
        self._require(Capability.SNAPSHOT)
        self._check()
        return await asyncio.to_thread(self._pool.snapshots)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        self._require(Capability.SNAPSHOT)
        self._check()
        check_id("snapshot", snapshot_id)
        found = self._pool.find_snapshot(snapshot_id)
        if found is not None:
            found[1].unlink(missing_ok=True)
            self._log.info("snapshot.deleted", snapshot_id=snapshot_id)

    async def create_volume_from_snapshot(self, snapshot_id: str, spec: VolumeSpec) -> VolumeInfo:
        self._require(Capability.VOLUME_FROM_SNAPSHOT)
        self._check()
        check_id("snapshot", snapshot_id)
        snapshot = self._snapshot(snapshot_id)
        source = self._pool.snapshot_path(snapshot_id, snapshot.volume_id)
        async with self._lock(spec.volume_id):
            await self._copy_into(spec, source, snapshot.size_mib, f"snapshot {snapshot_id}")
        return await self.get_volume(spec.volume_id)

    async def clone_volume(self, source_id: str, spec: VolumeSpec) -> VolumeInfo:
        self._require(Capability.CLONE)
        self._check()
        check_id("volume", source_id)
        async with self._lock(source_id, spec.volume_id):
            source = self._info(source_id, [])
            await self._copy_into(
                spec, self._pool.volume_path(source_id), source.size_mib, f"volume {source_id}"
            )
        return await self.get_volume(spec.volume_id)

    async def _copy_into(self, spec: VolumeSpec, source: Path, source_mib: int, what: str) -> None:
        """Make ``spec``'s volume a copy of ``source``; the caller holds the volume's lock."""
        if spec.size_mib < source_mib:
            raise InvalidRequest(
                f"size_mib {spec.size_mib} is smaller than {what} ({source_mib} MiB)"
            )
        if self._existing(spec) is None:
            self._check_room(spec.size_mib)
            dest = self._pool.volume_path(spec.volume_id)
            await self._pool.copy(source, dest, spec.size_mib, self._copy_timeout)
            self._log.info("volume.created", volume_id=spec.volume_id, source=what)

    # -- exports -----------------------------------------------------------------------------

    async def export_volume(self, volume_id: str, initiator: str) -> Connection:
        self._check()
        check_id("volume", volume_id)
        if not initiator or any(c.isspace() for c in initiator):
            raise InvalidRequest(f"initiator {initiator!r} is not an iSCSI name")
        async with self._lock(volume_id):
            self._info(volume_id, [])  # NotFound
            record = self._pool.read_export(volume_id)
            if record is not None and record.initiator != initiator:
                raise Conflict(
                    f"volume {volume_id} is exported to {record.initiator}: unexport it first"
                )
            if record is None:
                record = ExportRecord(
                    initiator=initiator,
                    chap_username=f"cc-{volume_id}",
                    chap_secret=secrets.token_urlsafe(15).replace("-", "x").replace("_", "y"),
                )
                # Recorded before tgtd hears of it: a crash half-way is finished by connect.
                await asyncio.to_thread(self._pool.write_export, volume_id, record)
            await self._ensure_target(volume_id, record)
        self._log.info("volume.exported", volume_id=volume_id, initiator=initiator)
        return self._connection(volume_id, record)

    async def unexport_volume(self, volume_id: str) -> None:
        self._check()
        check_id("volume", volume_id)
        async with self._lock(volume_id):
            record = self._pool.read_export(volume_id)
            target = self._find(await self._tgtadm.targets(), volume_id)
            if target is not None:
                await self._ignoring("no_target", self._tgtadm.delete_target(target.tid))
            if record is not None or target is not None:
                # The record is written before tgtd hears of an export and removed last: with
                # neither, tgtd holds no account of this volume.
                await self._ignoring("no_account", self._tgtadm.delete_account(f"cc-{volume_id}"))
            if record is not None:
                self._pool.remove_export(volume_id)
        if record is not None or target is not None:
            self._log.info("volume.unexported", volume_id=volume_id)

    async def export_also(self, volume_id: str, initiator: str) -> Connection:
        self._check()
        check_id("volume", volume_id)
        if not initiator or any(c.isspace() for c in initiator):
            raise InvalidRequest(f"initiator {initiator!r} is not an iSCSI name")
        async with self._lock(volume_id):
            record = self._pool.read_export(volume_id)
            if record is None:
                raise Conflict(f"volume {volume_id} is not exported: export it first")
            if initiator not in record.initiators():
                if record.second is not None:
                    raise Conflict(f"volume {volume_id} admits {record.second} as well already")
                record = msgspec.structs.replace(record, second=initiator)
                # Recorded before tgtd hears of it, as every export: connect finishes it.
                await asyncio.to_thread(self._pool.write_export, volume_id, record)
            await self._ensure_target(volume_id, record)
        self._log.info("volume.exported_also", volume_id=volume_id, initiator=initiator)
        return msgspec.structs.replace(self._connection(volume_id, record), initiator=initiator)

    async def unexport_from(self, volume_id: str, initiator: str) -> None:
        self._check()
        check_id("volume", volume_id)
        async with self._lock(volume_id):
            record = self._pool.read_export(volume_id)
            if record is None or initiator not in record.initiators():
                return
            if record.second is None:
                alone = True
            else:
                alone = False
                (kept,) = [i for i in record.initiators() if i != initiator]
                record = msgspec.structs.replace(record, initiator=kept, second=None)
                await asyncio.to_thread(self._pool.write_export, volume_id, record)
                await self._ensure_target(volume_id, record)
        if alone:
            await self.unexport_volume(volume_id)
            return
        self._log.info("volume.unexported_from", volume_id=volume_id, initiator=initiator)

    # -- pool --------------------------------------------------------------------------------

    async def capacity(self) -> Capacity:
        self._check()
        return await asyncio.to_thread(self._pool.capacity)

    # -- helpers -----------------------------------------------------------------------------

    def _iqn(self, volume_id: str) -> str:
        return f"{self._settings.iqn_prefix}:{volume_id}"

    def _find(self, targets: list[Target], volume_id: str) -> Target | None:
        iqn = self._iqn(volume_id)
        return next((t for t in targets if t.iqn == iqn), None)

    def _info(self, volume_id: str, targets: list[Target]) -> VolumeInfo:
        try:
            info = self._pool.volume_info(volume_id)
        except FileNotFoundError:
            raise NotFound(f"no volume {volume_id} in pool {self._settings.pool}") from None
        target = self._find(targets, volume_id)
        if target is None:
            return info
        exported_to = target.acls[0] if len(target.acls) == 1 else None
        return VolumeInfo(volume_id=volume_id, size_mib=info.size_mib,
                          allocated_mib=info.allocated_mib, exported_to=exported_to,
                          sessions=target.sessions)  # fmt: skip

    def _snapshot(self, snapshot_id: str) -> SnapshotInfo:
        found = self._pool.find_snapshot(snapshot_id)
        if found is None:
            raise NotFound(f"no snapshot {snapshot_id} in pool {self._settings.pool}")
        size, allocated = self._pool.sizes(found[1])
        return SnapshotInfo(snapshot_id=snapshot_id, volume_id=found[0], size_mib=size,
                            allocated_mib=allocated)  # fmt: skip

    def _existing(self, spec: VolumeSpec) -> VolumeInfo | None:
        try:
            info = self._pool.volume_info(spec.volume_id)
        except FileNotFoundError:
            return None
        if info.size_mib != spec.size_mib:
            raise AlreadyExists(
                f"volume {spec.volume_id} exists with {info.size_mib} MiB, not {spec.size_mib}"
            )
        return info

    def _check_room(self, size_mib: int) -> None:
        """Thin volumes may overcommit (the pool actor's policy); a volume larger than the
        whole filesystem is refused here."""
        total = shutil.disk_usage(self._pool.root).total // MIB
        if size_mib > total:
            raise InsufficientCapacity(
                f"{size_mib} MiB is more than pool {self._settings.pool} holds ({total} MiB)"
            )

    def _connection(self, volume_id: str, record: ExportRecord) -> Connection:
        return Connection(
            portal_host=self._settings.portal_host,
            portal_port=self._settings.portal_port,
            target_iqn=self._iqn(volume_id),
            lun=_LUN,
            initiator=record.initiator,
            chap_username=record.chap_username,
            chap_secret=record.chap_secret,
        )

    async def _ensure_target(self, volume_id: str, record: ExportRecord) -> None:
        """Make tgtd serve the volume as ``record`` says; rebuild a target left half-made.
        One listing of tgtd's targets serves the whole call (each tgtadm run is a process)."""
        path = str(self._pool.volume_path(volume_id))
        targets = await self._tgtadm.targets()
        target = self._find(targets, volume_id)
        if target is not None:
            if target.luns.get(_LUN) == path and target.accounts == [record.chap_username]:
                # Only the ACL may differ (a second initiator admitted or dropped): set it in
                # place, without cutting the sessions open on the target.
                await self._set_acls(target, record.initiators())
                return
            await self._ignoring("no_target", self._tgtadm.delete_target(target.tid))
            targets = [t for t in targets if t.tid != target.tid]
        await self._new_account(record)
        tid = await self._new_target(self._iqn(volume_id), targets)
        await self._tgtadm.new_lun(tid, _LUN, path)
        await self._tgtadm.bind_account(tid, record.chap_username)
        for initiator in record.initiators():
            await self._tgtadm.bind_initiator(tid, initiator)

    async def _set_acls(self, target: Target, initiators: list[str]) -> None:
        for initiator in initiators:
            if initiator not in target.acls:
                await self._tgtadm.bind_initiator(target.tid, initiator)
        for initiator in target.acls:
            if initiator not in initiators:
                await self._tgtadm.unbind_initiator(target.tid, initiator)

    async def _new_account(self, record: ExportRecord) -> None:
        try:
            await self._tgtadm.new_account(record.chap_username, record.chap_secret)
        except TgtadmRefused as exc:
            if exc.code != "exists":
                raise
            # Left by an export a crash cut short: its secret may not be the record's.
            await self._ignoring("no_account", self._tgtadm.delete_account(record.chap_username))
            await self._tgtadm.new_account(record.chap_username, record.chap_secret)

    async def _new_target(self, iqn: str, known: list[Target]) -> int:
        """Create the target under the lowest free tid (``known``: tgtd's targets as last
        listed); another client may take a tid between our look and our create, so a clash
        lists again and moves on."""
        async with self._tid_lock:
            targets = known
            for _ in range(5):
                used = {t.tid for t in targets}
                tid = next(n for n in range(1, len(used) + 2) if n not in used)
                try:
                    await self._tgtadm.new_target(tid, iqn)
                except TgtadmRefused as exc:
                    if exc.code == "exists":
                        targets = await self._tgtadm.targets()
                        continue
                    raise
                return tid
        raise BackendUnavailable(f"no free target id for {iqn} after 5 tries")

    @staticmethod
    async def _ignoring(code: str, call: Awaitable[None]) -> None:
        """Await ``call``; a refusal with ``code`` means the thing is gone already."""
        try:
            await call
        except TgtadmRefused as exc:
            if exc.code != code:
                raise
