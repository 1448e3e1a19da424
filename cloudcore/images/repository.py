"""The image repository of a datacenter: a directory of content-addressed files.

Layout below a datacenter's directory (an NFS export in production, mounted at the same path on
every host of the datacenter; a local directory here)::

    objects/<sha256>          the library: one file per content, named by the sha256 of its bytes
    uploads/<template>.part   an upload in progress, kept between requests so it can resume
    tmp/<node>/               a node's conversions in progress; emptied when that node opens it

A file enters ``objects/`` only whole: it is written elsewhere in the same file system, fsynced,
then renamed (atomic), and the directory fsynced. A crash leaves a partial file in ``uploads/``
or ``tmp/``, never in the library. The same bytes uploaded twice are stored once.

Blocking file work runs in threads; the methods are coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cloudcore.errors import InvalidRequest
from cloudcore.images.host_cache import HostCache

__all__ = ["Capacity", "ImageLibrary", "ImageRepository", "UploadFile", "sha256_of"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Capacity:
    """The repository's file system and what the library holds in it (bytes)."""

    total_bytes: int
    free_bytes: int
    library_bytes: int  # allocated by the files in objects/
    images: int


class ImageRepository:
    """One datacenter's directory."""

    def __init__(self, root: Path, node: str = "node") -> None:
        self.root = root
        self.objects = root / "objects"
        self.uploads = root / "uploads"
        # Per node: the directory may be shared (NFS) and each node clears only its own.
        self.tmp = root / "tmp" / node
        self.clones = root / "clones"
        for directory in (self.objects, self.uploads, self.tmp, self.clones):
            directory.mkdir(parents=True, exist_ok=True)

    def clear_scratch(self) -> None:
        """Remove what a crashed conversion left in ``tmp/`` (blocking; at open)."""
        for leftover in self.tmp.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def object_path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise InvalidRequest(f"sha256: {sha256!r} is not 64 lowercase hex digits")
        return self.objects / sha256

    def partial_path(self, template_id: str) -> Path:
        return self.uploads / f"{template_id}.part"

    def scratch_path(self, suffix: str, name: str | None = None) -> Path:
        """A file in this node's scratch: ``<name>.<suffix>``, or a new name if none is given."""
        if name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise InvalidRequest(f"name: {name!r} cannot name a scratch file")
        return self.tmp / f"{name or uuid.uuid4().hex}.{suffix}"

    def clone_path(self, base_sha256: str, vm_id: str) -> Path:
        """Where the linked clone of VM ``vm_id`` on the library file ``base_sha256`` lives:
        grouped by base, so a base's users are the names in its directory."""
        if not re.fullmatch(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]*", vm_id):
            raise InvalidRequest(f"vm id {vm_id!r} cannot name a disk")
        return self.clones / self.object_path(base_sha256).name / f"{vm_id}.qcow2"

    async def clone_users(self, base_sha256: str) -> list[str]:
        """The VMs whose disks are linked clones of the library file ``base_sha256``."""
        directory = self.clones / self.object_path(base_sha256).name
        names = await asyncio.to_thread(lambda: list(directory.glob("*.qcow2")))
        return sorted(p.stem for p in names)

    async def partial_size(self, template_id: str) -> int:
        path = self.partial_path(template_id)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return 0

    async def discard_partial(self, template_id: str) -> None:
        await asyncio.to_thread(self.partial_path(template_id).unlink, missing_ok=True)

    async def open_upload(self, template_id: str, offset: int) -> UploadFile:
        """The partial file of ``template_id`` positioned at ``offset`` (its current size, or 0
        to start over), with the sha256 of what it holds so far."""
        return await asyncio.to_thread(UploadFile.open, self.partial_path(template_id), offset)

    async def admit(self, path: Path, sha256: str, *, fsynced: bool = False) -> tuple[Path, bool]:
        """Move the complete file ``path`` into the library as ``sha256``, fsynced first unless
        ``fsynced`` says it is. Returns the library path and whether the content was new
        (False: stored already; ``path`` is removed and the existing file kept)."""
        return await asyncio.to_thread(self._admit, path, self.object_path(sha256), fsynced)

    @staticmethod
    def _admit(path: Path, target: Path, fsynced: bool) -> tuple[Path, bool]:
        if target.exists():
            path.unlink(missing_ok=True)
            return target, False
        if not fsynced:
            fsync_file(path)
        os.replace(path, target)
        _fsync_dir(target.parent)
        return target, True

    async def remove(self, sha256: str) -> None:
        await asyncio.to_thread(self.object_path(sha256).unlink, missing_ok=True)

    async def capacity(self) -> Capacity:
        return await asyncio.to_thread(self._capacity)

    def _capacity(self) -> Capacity:
        fs = os.statvfs(self.root)
        used = 0
        count = 0
        for entry in os.scandir(self.objects):
            if entry.is_file(follow_symlinks=False):
                used += entry.stat(follow_symlinks=False).st_blocks * 512
                count += 1
        return Capacity(fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize, used, count)


class UploadFile:
    """A partial upload being appended to. Not shared between coroutines."""

    def __init__(self, path: Path, handle: BinaryIO, digest: hashlib._Hash, size: int) -> None:
        self.path = path
        self._handle = handle
        self._digest = digest
        self.size = size

    @classmethod
    def open(cls, path: Path, offset: int) -> UploadFile:
        """Blocking: open ``path`` for appending at ``offset``, hashing what precedes it."""
        handle = path.open("r+b" if offset and path.exists() else "w+b")
        try:
            handle.truncate(offset)
            digest = hashlib.sha256()
            handle.seek(0)
            while block := handle.read(_CHUNK):
                digest.update(block)
            handle.seek(offset)
        except BaseException:
            handle.close()
            raise
        return cls(path, handle, digest, offset)

    async def write(self, chunk: bytes | bytearray) -> None:
        """Append ``chunk`` (not to be changed until this returns): written and hashed at the
        same time, in two threads (both let go of the GIL), so hashing costs no time of its own
        when the disk is the slower."""
        await asyncio.gather(
            asyncio.to_thread(self._handle.write, chunk),
            asyncio.to_thread(self._digest.update, chunk),
        )
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    async def close(self) -> None:
        """Flush and fsync what arrived (it counts for a resume only once on disk), close."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with contextlib.closing(self._handle):
            self._handle.flush()
            os.fsync(self._handle.fileno())


class ImageLibrary:
    """The repositories of every datacenter below one directory. Templates usable in every
    datacenter (``datacenter_id`` None) live in ``_shared``. The hosts' caches of linked-clone
    bases (:class:`HostCache`) are one directory per host below ``host_cache_root`` (None:
    ``<root>.hosts``, beside the library)."""

    SHARED = "_shared"

    def __init__(self, root: Path, node: str = "node", host_cache_root: Path | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]*", node):
            raise InvalidRequest(f"node id {node!r} cannot name a scratch directory")
        self.root = root
        self.node = node
        self.host_cache_root = host_cache_root or root.parent / f"{root.name}.hosts"
        self._repos: dict[str, ImageRepository] = {}
        self._hosts: dict[str, HostCache] = {}
        #: Templates an upload request of this node is writing (one request at a time each).
        self.uploading: set[str] = set()

    def repository(self, datacenter_id: str | None) -> ImageRepository:
        """The repository of ``datacenter_id``, made (and its scratch emptied) on first use."""
        name = datacenter_id or self.SHARED
        repo = self._repos.get(name)
        if repo is None:
            if name != self.SHARED and not re.fullmatch(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]*", name):
                raise InvalidRequest(f"datacenter_id: {name!r} cannot name a repository")
            repo = ImageRepository(self.root / name, self.node)
            repo.clear_scratch()
            self._repos[name] = repo
        return repo

    def host_cache(self, host_id: str) -> HostCache:
        """Host ``host_id``'s cache of bases, made on first use."""
        cache = self._hosts.get(host_id)
        if cache is None:
            if not re.fullmatch(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]*", host_id):
                raise InvalidRequest(f"host_id: {host_id!r} cannot name a cache directory")
            cache = self._hosts[host_id] = HostCache(self.host_cache_root / host_id)
        return cache

    async def host_caches(self) -> list[HostCache]:
        """The cache of every host that has one."""
        root = self.host_cache_root
        names = await asyncio.to_thread(
            lambda: sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        )
        return [self.host_cache(name) for name in names]

    async def clone_users(self, datacenter_id: str | None, sha256: str) -> list[str]:
        """The VMs whose disks are linked clones of the library file ``sha256``: in any host's
        cache, or (made before the caches) in ``datacenter_id``'s repository."""
        users = set(await self.repository(datacenter_id).clone_users(sha256))
        for cache in await self.host_caches():
            users.update(await cache.clone_users(sha256))
        return sorted(users)

    async def clones_of(self, sha256: str, vm_id: str) -> list[Path]:
        """Where VM ``vm_id``'s clones on ``sha256`` are, in any host's cache (one, unless the
        VM moved hosts after a crash while its define ran)."""
        found = [c.clone_path(sha256, vm_id) for c in await self.host_caches()]
        return [p for p in found if await asyncio.to_thread(p.exists)]

    async def evict(self, sha256: str) -> list[str]:
        """Remove base ``sha256`` from every host's cache where no clone uses it; the hosts
        whose copy was removed."""
        return [c.root.name for c in await self.host_caches() if await c.evict(sha256)]

    async def sweep(self) -> dict[str, list[str]]:
        """Evict, on every host, the bases no clone uses: host id -> the bases removed."""
        removed = {cache.root.name: await cache.sweep() for cache in await self.host_caches()}
        return {host: shas for host, shas in removed.items() if shas}


def sha256_of(path: Path) -> str:
    """Blocking: the sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    """Blocking: write ``path``'s data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
