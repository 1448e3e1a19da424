"""The disks a migration must copy, because the destination host does not share them, and the
copying itself, all through libvirt (so it works between hosts that see different files at the
same path, as the recipe's two daemons with their own mount namespaces do).

Which disks: a host lists the directories it shares with its peers in
``extra["shared_paths"]`` (the host's ``driver.shared_paths`` capability; directories
separated by ``:``). A file disk (``device='disk'``, not read-only) is shared when its path lies
under a directory **both** hosts list, and copied otherwise. When neither host lists any, every
disk is taken to be shared (no copy: the behaviour of a datacenter on one shared file system).

How: the destination's copy is made at the same path, in a storage pool of the destination
daemon covering the disk's directory (one it has, else a transient ``dir`` pool this module
starts, named ``cc-<hash>``); same name, format and capacity.

- Live: libvirt's own storage copy (``VIR_MIGRATE_NON_SHARED_DISK`` with the disks named in
  ``VIR_MIGRATE_PARAM_MIGRATE_DISKS``): QEMU mirrors each disk into the pre-created copy over
  NBD while the memory moves. The whole disk is copied (a backing chain is flattened).
- Cold: the file's bytes are streamed (``vol.download`` into ``vol.upload``, sparse) before the
  offline migration moves the definition. The file is copied as it is, so a backing file must
  be shared by both hosts; one that is not is refused before anything is copied.

After the migration succeeded the source's copies are deleted (through the source daemon's
pool); after it failed or was aborted the destination's copies are deleted, so the disk is
where the VM is. A destination that already has a file at the path is refused (Conflict): the
copy never overwrites a file it did not make.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import libvirt
import structlog

from cloudcore.errors import Conflict, UnsupportedOperation

__all__ = ["LocalDisk", "copy_cold", "discard", "precreate", "to_copy"]

_log = structlog.get_logger("hypervisor_drivers.libvirt")


@dataclass(frozen=True)
class LocalDisk:
    """A disk of the VM that the destination does not share."""

    dev: str  # the target device (``vda``): what NON_SHARED_DISK names
    path: str
    format: str


def _shared(extra: Mapping[str, str]) -> list[str]:
    listed = extra.get("shared_paths", "")
    return [os.path.normpath(p) for p in listed.split(":") if p.strip()]


def _under(path: str, directories: list[str]) -> bool:
    path = os.path.normpath(path)
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


def to_copy(
    domain_xml: str, source: Mapping[str, str], destination: Mapping[str, str]
) -> list[LocalDisk]:
    """The VM's file disks that are not on a path both hosts share (none when neither host
    lists shared paths)."""
    mine, theirs = _shared(source), _shared(destination)
    if not mine and not theirs:
        return []
    found: list[LocalDisk] = []
    for disk in ET.fromstring(domain_xml).iterfind("devices/disk"):
        src, target = disk.find("source"), disk.find("target")
        if disk.get("type") != "file" or disk.get("device", "disk") != "disk":
            continue
        if src is None or target is None or disk.find("readonly") is not None:
            continue
        path = src.get("file") or ""
        if path and not (_under(path, mine) and _under(path, theirs)):
            driver = disk.find("driver")
            kind = driver.get("type", "raw") if driver is not None else "raw"
            found.append(LocalDisk(dev=target.get("dev", ""), path=path, format=kind))
    return found


def _pool(conn: Any, directory: str) -> Any:
    """The daemon's active pool whose target is ``directory``; a transient one if it has none."""
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByTargetPath(directory)
        if pool.isActive():
            pool.refresh(0)
            return pool
    name = "cc-" + hashlib.sha256(directory.encode()).hexdigest()[:12]
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(name)
        if not pool.isActive():
            pool.create(0)
        pool.refresh(0)
        return pool
    xml = (
        f"<pool type='dir'><name>{name}</name>"
        f"<target><path>{escape(directory)}</path></target></pool>"
    )
    return conn.storagePoolCreateXML(xml, libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)


def _volume(conn: Any, path: str) -> Any:
    return _pool(conn, os.path.dirname(path)).storageVolLookupByName(os.path.basename(path))


def _exists(pool: Any, name: str) -> bool:
    try:
        pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def _backing(volume: Any) -> str | None:
    found = ET.fromstring(volume.XMLDesc(0)).find("backingStore/path")
    return found.text if found is not None and found.text else None


def precreate(source: Any, destination: Any, disks: list[LocalDisk]) -> list[LocalDisk]:
    """Make each disk's empty copy on the destination (its source's format and capacity).
    Returns those made (for :func:`discard`); raises Conflict when a file is there already."""
    made: list[LocalDisk] = []
    try:
        for disk in disks:
            capacity = _volume(source, disk.path).info()[1]
            pool = _pool(destination, os.path.dirname(disk.path))
            name = os.path.basename(disk.path)
            if _exists(pool, name):
                raise Conflict(f"the destination has a file at {disk.path} already")
            pool.createXML(
                f"<volume><name>{escape(name)}</name><capacity unit='B'>{capacity}</capacity>"
                f"<target><format type={quoteattr(disk.format)}/></target></volume>",
                0,
            )
            made.append(disk)
    except BaseException:
        discard(destination, made)
        raise
    return made


def copy_cold(
    source: Any, destination: Any, disks: list[LocalDisk], shared: list[Mapping[str, str]]
) -> None:
    """Stream each disk's file to its pre-created copy. Raises UnsupportedOperation for a disk
    whose backing file the hosts do not both share (checked before anything is copied)."""
    volumes = [_volume(source, d.path) for d in disks]
    for disk, volume in zip(disks, volumes, strict=True):
        backing = _backing(volume)
        if backing is not None and not all(_under(backing, _shared(s)) for s in shared):
            raise UnsupportedOperation(
                f"disk {disk.path} has the backing file {backing}, which the hosts do not both "
                "share: a stopped VM's linked clone cannot be copied"
            )
    for disk, volume in zip(disks, volumes, strict=True):
        _stream(source, destination, volume, _volume(destination, disk.path))


def _stream(source: Any, destination: Any, volume: Any, copy: Any) -> None:
    down, up = source.newStream(0), destination.newStream(0)
    volume.download(down, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
    copy.upload(up, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)

    def data(_stream: Any, chunk: bytes, _opaque: Any) -> int:
        sent = 0
        while sent < len(chunk):
            sent += int(up.send(chunk[sent:]))
        return sent

    def hole(_stream: Any, length: int, _opaque: Any) -> int:
        up.sendHole(length, 0)
        return 0

    try:
        down.sparseRecvAll(data, hole, None)
        down.finish()
        up.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            down.abort()
        with contextlib.suppress(libvirt.libvirtError):
            up.abort()
        raise


def discard(conn: Any, disks: list[LocalDisk]) -> None:
    """Delete the disks' files on the daemon ``conn`` (those it has; errors logged, not raised:
    the migration's outcome is decided already)."""
    for disk in disks:
        try:
            _volume(conn, disk.path).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                continue
            _log.error("migration.disk_left", path=disk.path, error=str(exc))
            continue
        _log.info("migration.disk_removed", path=disk.path)
