"""The image library: per-datacenter repositories of content-addressed disk images, and
``qemu-img`` to inspect, check, convert and compare them.

:func:`inspect` is the gate every image passes before it enters the library.
"""

from __future__ import annotations

from pathlib import Path

from cloudcore.config import Settings
from cloudcore.errors import ImageRejected
from cloudcore.images.host_cache import HostCache
from cloudcore.images.qemu import CHECKABLE, FORMATS, ImageInfo, QemuImg
from cloudcore.images.repository import (
    Capacity,
    ImageLibrary,
    ImageRepository,
    UploadFile,
    fsync_file,
    sha256_of,
)

__all__ = [
    "CHECKABLE",
    "FORMATS",
    "Capacity",
    "HostCache",
    "ImageInfo",
    "ImageLibrary",
    "ImageRepository",
    "QemuImg",
    "UploadFile",
    "fsync_file",
    "host_cache_root",
    "image_root",
    "inspect",
    "sha256_of",
]


async def inspect(qemu: QemuImg, path: Path, *, deadline: float) -> ImageInfo:
    """What ``path`` really is, or ImageRejected: a format the library does not take, a backing
    file (it could point anywhere on the host: outside the library is an escape), a VMDK whose
    descriptor names other files (the same escape), or a failed ``qemu-img check``."""
    info = await qemu.info(path, deadline=deadline)
    if info.format not in FORMATS:
        accepted = ", ".join(sorted(FORMATS))
        raise ImageRejected(f"the image is {info.format}; the library takes {accepted}")
    if info.backing_file is not None:
        raise ImageRejected(
            f"the {info.format} image has a backing file ({info.backing_file!r}); "
            "upload a self-contained image (qemu-img convert flattens one)"
        )
    if info.extents:
        raise ImageRejected(
            f"the {info.format} image reads other files ({', '.join(info.extents)}); "
            "upload a single-file image"
        )
    if info.format in CHECKABLE:
        await qemu.check(path, info.format, deadline=deadline)
    return info


def image_root(settings: Settings) -> Path:
    """``images.repository_dir``, or ``<node.data_dir>/images``."""
    return Path(settings.images.repository_dir or Path(settings.node.data_dir) / "images")


def host_cache_root(settings: Settings) -> Path | None:
    """``images.host_cache_dir``, or None: beside the library (``<image root>.hosts``)."""
    return Path(settings.images.host_cache_dir) if settings.images.host_cache_dir else None
