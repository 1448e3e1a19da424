"""``qemu-img`` as asyncio subprocesses: inspect, check, convert with progress, compare, clone.

Every call has a deadline; a call past it, or cancelled, kills its process before it returns, so
no qemu-img outlives the coroutine that started it. Nothing here trusts an image: formats are
probed (never taken from a file name) and the caller decides what to refuse (see
:func:`cloudcore.images.inspect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from cloudcore.errors import DriverError, ImageRejected

__all__ = ["CHECKABLE", "FORMATS", "ImageInfo", "QemuImg"]

#: Formats the library accepts in an upload and converts to (``vpc`` is VHD).
FORMATS = frozenset({"raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi"})
#: Formats ``qemu-img check`` can check (raw has no metadata to check).
CHECKABLE = frozenset({"qcow2", "vmdk", "vhdx", "vpc", "vdi"})

_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_CHECK_UNSUPPORTED = 63  # qemu-img check: "this image format does not support checks"
_CHECK_LEAKS = 3  # leaked clusters only: wasted space, not corruption


class _RawInfo(msgspec.Struct, kw_only=True, rename="kebab"):
    format: str
    virtual_size: int
    actual_size: int = 0
    backing_filename: str | None = None
    full_backing_filename: str | None = None
    format_specific: dict[str, Any] = msgspec.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ``qemu-img info`` says of a file."""

    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None
    #: Files a multi-file format (a VMDK descriptor) reads, other than the image itself.
    extents: tuple[str, ...]


ProgressSink = Callable[[float], Awaitable[None]]


class QemuImg:
    """One ``qemu-img`` binary."""

    def __init__(self, binary: str = "qemu-img") -> None:
        self.binary = binary

    async def info(self, path: Path, *, deadline: float) -> ImageInfo:
        """The probed format, sizes, backing file and extra files of ``path``."""
        out = await self._run(["info", "--output=json", str(path)], deadline=deadline)
        try:
            raw = msgspec.json.decode(out, type=_RawInfo)
        except msgspec.DecodeError as exc:
            raise ImageRejected(f"qemu-img info could not describe the image: {exc}") from exc
        extents = _extents(raw.format_specific, path)
        backing = raw.full_backing_filename or raw.backing_filename
        return ImageInfo(raw.format, raw.virtual_size, raw.actual_size, backing, extents)

    async def check(self, path: Path, fmt: str, *, deadline: float) -> None:
        """ImageRejected if ``qemu-img check`` finds corruption (leaks alone pass)."""
        proc = await self._spawn(["check", "--output=json", "-f", fmt, str(path)])
        out, err = await self._wait(proc, deadline)
        if proc.returncode in (0, _CHECK_LEAKS, _CHECK_UNSUPPORTED):
            return
        detail = (err or out).decode(errors="replace").strip()[:500]
        raise ImageRejected(f"qemu-img check refused the {fmt} image: {detail}")

    async def convert(
        self,
        src: Path,
        src_format: str,
        dst: Path,
        dst_format: str,
        *,
        deadline: float,
        progress: ProgressSink | None = None,
    ) -> None:
        """Write ``src`` as ``dst`` in ``dst_format``, reporting progress (0 to 1) as qemu-img
        prints it with ``-p``. VHD keeps the exact size (``force_size``)."""
        args = ["convert", "-p", "-f", src_format, "-O", dst_format]
        if dst_format == "vpc":
            args += ["-o", "subformat=dynamic,force_size=on"]
        proc = await self._spawn([*args, str(src), str(dst)])
        try:
            async with asyncio.timeout(deadline):
                err_task = asyncio.ensure_future(_read_all(proc.stderr))
                await _follow_progress(proc.stdout, progress)
                err = await err_task
                await proc.wait()
        finally:
            await _reap(proc)
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip()[:500]
            raise DriverError(f"qemu-img convert to {dst_format} failed: {detail}", code="qemu-img")

    async def compare(
        self, a: Path, a_format: str, b: Path, b_format: str, *, deadline: float
    ) -> bool:
        """Whether the two images have the same guest-visible content (and size)."""
        args = ["compare", "-f", a_format, "-F", b_format, str(a), str(b)]
        proc = await self._spawn(args)
        out, err = await self._wait(proc, deadline)
        if proc.returncode in (0, 1):
            return proc.returncode == 0
        detail = (err or out).decode(errors="replace").strip()[:500]
        raise DriverError(f"qemu-img compare failed: {detail}", code="qemu-img")

    async def create_clone(self, base: Path, clone: Path, *, size: int | None = None) -> None:
        """A qcow2 ``clone`` whose backing file is the qcow2 ``base`` (a linked clone)."""
        args = ["create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(clone)]
        await self._run([*args, *([str(size)] if size else [])], deadline=60.0)

    async def _run(self, args: Sequence[str], *, deadline: float) -> bytes:
        proc = await self._spawn(args)
        out, err = await self._wait(proc, deadline)
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip()[:500]
            raise ImageRejected(f"qemu-img {args[0]} refused the image: {detail}")
        return out

    async def _spawn(self, args: Sequence[str]) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                self.binary,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise DriverError(f"cannot run {self.binary}: {exc}", code="qemu-img") from exc

    @staticmethod
    async def _wait(proc: asyncio.subprocess.Process, deadline: float) -> tuple[bytes, bytes]:
        try:
            async with asyncio.timeout(deadline):
                return await proc.communicate()
        finally:
            await _reap(proc)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill ``proc`` if it still runs (a deadline or a cancellation), and wait for it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())


async def _read_all(stream: asyncio.StreamReader | None) -> bytes:
    return await stream.read() if stream is not None else b""


async def _follow_progress(stream: asyncio.StreamReader | None, sink: ProgressSink | None) -> None:
    """Parse ``(12.50/100%)`` records, separated by carriage returns, into the sink."""
    if stream is None:
        return
    buffer = b""
    while chunk := await stream.read(4096):
        buffer += chunk
        *records, buffer = buffer.split(b"\r")
        await _report(records, sink)
    await _report([buffer], sink)  # the last record may end without a carriage return


async def _report(records: list[bytes], sink: ProgressSink | None) -> None:
    for record in records:
        found = _PROGRESS.search(record)
        if found is not None and sink is not None:
            await sink(float(found[1]) / 100.0)


def _extents(specific: dict[str, Any], image: Path) -> tuple[str, ...]:
    data = specific.get("data", {})
    names = [e.get("filename", "") for e in data.get("extents", []) if isinstance(e, dict)]
    return tuple(n for n in names if n and Path(n).resolve() != image.resolve())
