"""A host's cache of linked-clone bases: one copy of each base a VM of that host is cloned from.

Layout below a host's directory (its local disk in production; here one directory per host
below ``images.host_cache_dir``, all on this machine)::

    bases/<sha256>              a copy of the library file <sha256>, whole and checked
    bases/<sha256>.<uuid>.part  a copy being written (never a clone's backing file)
    clones/<sha256>/<vm>.qcow2  a VM's linked clone, backed by bases/<sha256>
    locks/<sha256>              the lock of that base (flock), held to copy, clone or evict it

A base is copied once per host: the copy and every clone made on it hold the base's lock (an
asyncio lock within a process, an ``flock`` between processes), so concurrent deploys on one
host wait for the one copy and then share it. The copy is written under a temporary name,
hashed while it is written, fsynced, and renamed only if its size and sha256 are the library
file's; a copy killed half way leaves a ``.part`` file that no clone uses and the next holder of
the lock removes. A base no clone of the host uses can be evicted (:meth:`HostCache.evict`,
:meth:`HostCache.sweep`), under the same lock, so never from under a clone being made.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from cloudcore.errors import DriverError, InvalidRequest

__all__ = ["HostCache"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]*$")
_CHUNK = 1024 * 1024
_LOCK_POLL = 0.05  # seconds between tries of a lock another process holds


class HostCache:
    """One host's directory of bases and clones."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bases = root / "bases"
        self.clones = root / "clones"
        self.locks = root / "locks"
        for directory in (self.bases, self.clones, self.locks):
            directory.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, asyncio.Lock] = {}

    def base_path(self, sha256: str) -> Path:
        return self.bases / _sha(sha256)

    def clone_path(self, sha256: str, vm_id: str) -> Path:
        """Where VM ``vm_id``'s linked clone on base ``sha256`` lives: grouped by base, so a
        base's users are the names in its directory."""
        if not _NAME.match(vm_id):
            raise InvalidRequest(f"vm id {vm_id!r} cannot name a disk")
        return self.clones / _sha(sha256) / f"{vm_id}.qcow2"

    async def clone_users(self, sha256: str) -> list[str]:
        """The VMs of this host whose clones are backed by base ``sha256``."""
        directory = self.clones / _sha(sha256)
        names = await asyncio.to_thread(lambda: list(directory.glob("*.qcow2")))
        return sorted(p.stem for p in names)

    async def cached(self) -> list[str]:
        """The sha256 of every base held (whole: partial copies are not listed)."""
        names = await asyncio.to_thread(lambda: [p.name for p in self.bases.iterdir()])
        return sorted(n for n in names if _SHA256.match(n))

    @contextlib.asynccontextmanager
    async def locked(self, sha256: str) -> AsyncIterator[None]:
        """Hold base ``sha256``'s lock: one holder in this process, then one across processes
        (the ``flock`` is tried without blocking, so a cancelled waiter leaves no lock held)."""
        lock = self._held.setdefault(_sha(sha256), asyncio.Lock())
        async with lock:
            fd = os.open(self.locks / sha256, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                while True:  # another process holds it: try again shortly
                    if _try_flock(fd):
                        break
                    await asyncio.sleep(_LOCK_POLL)
                yield
            finally:
                os.close(fd)  # releases the flock

    async def ensure_base(self, sha256: str, source: Path, size: int) -> bool:
        """Make sure base ``sha256`` is here: copied from ``source`` (the library file, ``size``
        bytes) unless a whole copy of that size is. Call it holding :meth:`locked`. Returns
        whether a copy was made. DriverError if what was read is not ``size`` bytes of sha256
        ``sha256`` (nothing is kept then)."""
        target = self.base_path(sha256)
        held = await asyncio.to_thread(_size_of, target)
        if held == size:
            return False
        await asyncio.to_thread(self._clear_partials, sha256)
        part = self.bases / f"{sha256}.{uuid.uuid4().hex}.part"
        await asyncio.to_thread(_copy, source, part, target, sha256, size)
        return True

    @contextlib.asynccontextmanager
    async def base(self, sha256: str, source: Path, size: int) -> AsyncIterator[Path]:
        """Base ``sha256`` (copied first if missing), its lock held while the caller makes a
        clone on it, so no eviction removes it meanwhile."""
        async with self.locked(sha256):
            await self.ensure_base(sha256, source, size)
            yield self.base_path(sha256)

    async def evict(self, sha256: str) -> bool:
        """Remove base ``sha256`` (and any partial copy of it) if no clone of this host uses
        it. Returns whether a base was removed."""
        async with self.locked(sha256):
            if await self.clone_users(sha256):
                return False
            await asyncio.to_thread(self._clear_partials, sha256)
            target = self.base_path(sha256)
            present = await asyncio.to_thread(target.exists)
            await asyncio.to_thread(target.unlink, missing_ok=True)
            return present

    async def sweep(self) -> list[str]:
        """Evict every base no clone uses, and partial copies left by a killed copy. Returns
        the sha256 of the bases removed."""
        names = await asyncio.to_thread(lambda: [p.name for p in self.bases.iterdir()])
        shas = sorted({n.split(".", 1)[0] for n in names if _SHA256.match(n.split(".", 1)[0])})
        return [sha for sha in shas if await self.evict(sha)]

    def _clear_partials(self, sha256: str) -> None:
        for leftover in self.bases.glob(f"{sha256}.*.part"):
            leftover.unlink(missing_ok=True)


def _sha(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise InvalidRequest(f"sha256: {sha256!r} is not 64 lowercase hex digits")
    return sha256


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _copy(source: Path, part: Path, target: Path, sha256: str, size: int) -> None:
    """Blocking: ``source`` into ``part``, hashed as it is written, fsynced, then renamed to
    ``target`` if it is ``size`` bytes of sha256 ``sha256``; removed otherwise."""
    digest = hashlib.sha256()
    copied = 0
    try:
        with source.open("rb") as src, part.open("wb") as out:
            while block := src.read(_CHUNK):
                digest.update(block)
                out.write(block)
                copied += len(block)
            out.flush()
            os.fsync(out.fileno())
        if copied != size or digest.hexdigest() != sha256:
            raise DriverError(
                f"the copy of base {sha256} read {copied} bytes of sha256 {digest.hexdigest()}"
                f" from {source}; expected {size} bytes of sha256 {sha256}",
                code="base_copy",
            )
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
