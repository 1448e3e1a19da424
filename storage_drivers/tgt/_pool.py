"""The tgt driver's pool directory: sparse volume files, snapshot files, export records.

Layout under the pool directory::

    volumes/<volume_id>.img                    a sparse raw file per volume (the LUN's backing)
    snapshots/<snapshot_id>@<volume_id>.img    a sparse copy per snapshot
    exports/<volume_id>.json                   initiator and CHAP credentials (mode 0600)
    tmp/                                       files being made; linked into place when whole

A create writes under ``tmp/`` and then links the whole file into place (never over an
existing one), so a crash never leaves a half volume in the listing. Export records are the
driver's memory of what tgtd should serve: tgtd forgets every target when it restarts, and
``connect`` re-creates them from these files. The directory is mode 0700 and each record 0600,
so only this node's cloudcore user reads the secrets.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import msgspec

from cloudcore.errors import AlreadyExists, DriverError
from storage_drivers.tgt._client import run_tool
from storage_drivers.types import Capacity, SnapshotInfo, VolumeInfo

__all__ = ["MIB", "ExportRecord", "Pool"]

MIB = 1024 * 1024


class ExportRecord(msgspec.Struct, frozen=True, kw_only=True):
    initiator: str
    chap_username: str
    chap_secret: str
    second: str | None = None  # an initiator admitted as well while the VM migrates

    def initiators(self) -> list[str]:
        return [self.initiator, *([self.second] if self.second else [])]

    def __repr__(self) -> str:
        return f"ExportRecord(initiator={self.initiator!r}, chap_username={self.chap_username!r})"


def _place(tmp: Path, dest: Path) -> None:
    """Give the whole file ``tmp`` the name ``dest`` too (the caller unlinks ``tmp``). Never a
    replacement: AlreadyExists when ``dest`` exists (another driver on the pool made it)."""
    try:
        os.link(tmp, dest)
    except FileExistsError as exc:
        raise AlreadyExists(f"{dest.name} was made meanwhile by another driver") from exc


def _mib(nbytes: int) -> int:
    return -(-nbytes // MIB)


class Pool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._volumes = root / "volumes"
        self._snapshots = root / "snapshots"
        self._exports = root / "exports"
        self._tmp = root / "tmp"

    def prepare(self) -> None:
        """Make the directories (exports/ private); leftovers of interrupted creates go."""
        for path in (self._volumes, self._snapshots, self._tmp):
            path.mkdir(parents=True, exist_ok=True)
        self._exports.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._exports.chmod(0o700)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    # -- files -------------------------------------------------------------------------------

    def volume_path(self, volume_id: str) -> Path:
        return self._volumes / f"{volume_id}.img"

    def snapshot_path(self, snapshot_id: str, volume_id: str) -> Path:
        return self._snapshots / f"{snapshot_id}@{volume_id}.img"

    def find_snapshot(self, snapshot_id: str) -> tuple[str, Path] | None:
        """(volume id, path) of the snapshot, or None."""
        for path in self._snapshots.glob(f"{snapshot_id}@*.img"):
            return path.stem.split("@", 1)[1], path
        return None

    @staticmethod
    def sizes(path: Path) -> tuple[int, int]:
        """(size, allocated) of a file in MiB; raises FileNotFoundError."""
        st = path.stat()
        return _mib(st.st_size), _mib(st.st_blocks * 512)

    def volume_info(self, volume_id: str) -> VolumeInfo:
        size, allocated = self.sizes(self.volume_path(volume_id))
        return VolumeInfo(volume_id=volume_id, size_mib=size, allocated_mib=allocated)

    def volume_ids(self) -> list[str]:
        return sorted(p.stem for p in self._volumes.glob("*.img"))

    def snapshots(self) -> list[SnapshotInfo]:
        found = []
        for path in sorted(self._snapshots.glob("*@*.img")):
            snapshot_id, volume_id = path.stem.split("@", 1)
            size, allocated = self.sizes(path)
            found.append(SnapshotInfo(snapshot_id=snapshot_id, volume_id=volume_id,
                                      size_mib=size, allocated_mib=allocated))  # fmt: skip
        return found

    async def create(self, dest: Path, size_mib: int) -> None:
        """A sparse zero-filled file of ``size_mib`` at ``dest``, whole or not at all."""

        def make() -> None:
            tmp = self._tmp / f"{uuid.uuid4().hex}.img"
            try:
                with tmp.open("xb") as f:
                    f.truncate(size_mib * MIB)
                _place(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)

        await asyncio.to_thread(make)

    async def copy(self, source: Path, dest: Path, size_mib: int, timeout: float) -> None:
        """A sparse copy of ``source`` grown to ``size_mib`` at ``dest``, whole or not at all."""
        tmp = self._tmp / f"{uuid.uuid4().hex}.img"
        try:
            code, _, err = await run_tool(
                ["cp", "--sparse=always", str(source), str(tmp)], timeout, f"copy {source.name}"
            )
            if code != 0:
                raise DriverError(f"copying {source.name} failed: {err.strip()}", code="copy")
            await asyncio.to_thread(self._grow_and_place, tmp, dest, size_mib)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _grow_and_place(tmp: Path, dest: Path, size_mib: int) -> None:
        if tmp.stat().st_size < size_mib * MIB:
            os.truncate(tmp, size_mib * MIB)
        _place(tmp, dest)

    async def grow(self, path: Path, size_mib: int) -> None:
        await asyncio.to_thread(os.truncate, path, size_mib * MIB)

    def capacity(self) -> Capacity:
        usage = shutil.disk_usage(self.root)
        provisioned = sum(self.sizes(p)[0] for p in self._volumes.glob("*.img"))
        provisioned += sum(self.sizes(p)[0] for p in self._snapshots.glob("*.img"))
        return Capacity(total_mib=usage.total // MIB, used_mib=_mib(usage.used),
                        provisioned_mib=provisioned)  # fmt: skip

    # -- export records ----------------------------------------------------------------------

    def _record_path(self, volume_id: str) -> Path:
        return self._exports / f"{volume_id}.json"

    def read_export(self, volume_id: str) -> ExportRecord | None:
        try:
            data = self._record_path(volume_id).read_bytes()
        except FileNotFoundError:
            return None
        return msgspec.json.decode(data, type=ExportRecord)

    def write_export(self, volume_id: str, record: ExportRecord) -> None:
        tmp = self._exports / f".{volume_id}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(record))
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self._record_path(volume_id))

    def remove_export(self, volume_id: str) -> None:
        self._record_path(volume_id).unlink(missing_ok=True)

    def exported_ids(self) -> list[str]:
        return sorted(p.stem for p in self._exports.glob("*.json"))
