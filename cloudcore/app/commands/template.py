"""``cloudcore template ...``: the image library through the HTTP API.

``create`` adds a template (no image yet); ``upload ID FILE`` streams a file to it with a
progress bar (its sha256 computed first, the upload resumed from what the server holds after a
dropped connection); ``import ID URL`` and ``convert ID FORMAT`` answer with their task, which
``--wait`` follows with a progress bar; ``list``, ``show`` and ``delete`` as for VMs. A
template (and a datacenter) is given by id or by name.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from cloudcore.app.client import ApiFailure, Client
from cloudcore.app.commands._output import Column, show_one
from cloudcore.app.commands._resolve import DATACENTER, TEMPLATE, resolve
from cloudcore.app.commands._resource import Actions, body_of, list_records
from cloudcore.app.commands._tasks import accepted

__all__ = ["ByteProgress", "add_parser"]

_CHUNK = 1024 * 1024
_ATTEMPTS = 5
_MIB = 1024 * 1024

_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("STATE", "state"),
    ("FORMAT", "disk_format"),
    ("VIRTUAL_GIB", lambda t: f"{int(t.get('virtual_size') or 0) / 1024**3:.1f}"),
    ("FORMATS", lambda t: ",".join(sorted(t.get("formats") or {}))),
    ("TENANT", lambda t: t.get("tenant_id") or "(public)"),
]

_FIELDS: list[Column] = [
    *_COLUMNS,
    ("DATACENTER", "datacenter_id"),
    ("OS", "os_type"),
    ("MIN_CPUS", "min_cpus"),
    ("MIN_MEMORY_MIB", "min_memory_mib"),
    ("CHECKSUM", "checksum"),
    ("ACTUAL_SIZE", "actual_size"),
    ("UPLOADED", "uploaded_bytes"),
    ("SOURCE", "source"),
    ("ERROR", "error"),
    ("CREATED", "created_at"),
]


def add_parser(sub: Any) -> None:
    actions = Actions(sub, "template", "templates: create, upload, import, list, delete")
    listing = actions.listing("list templates (yours and the public ones), the newest first", _list)
    listing.add_argument("--name", help="only templates of this name")
    actions.add("show", "show a template", _show, ref="TEMPLATE")

    create = actions.add("create", "add a template (its image comes by upload or import)", _create)
    create.add_argument("--name", required=True)
    create.add_argument("--datacenter", help="its datacenter (default: every datacenter)")
    create.add_argument("--os-type", default="")
    create.add_argument("--min-cpus", type=int, default=0)
    create.add_argument("--min-memory", type=int, default=0, metavar="MIB")
    create.add_argument("--public", action="store_true", help="for every tenant (admins)")
    create.add_argument("--tenant", help="for this tenant (admins, operators)")

    upload = actions.add(
        "upload", "upload a disk image file to a template", _upload, ref="TEMPLATE"
    )
    upload.add_argument("file", type=Path)

    imported = actions.add(
        "import",
        "import a template's image from an http(s) URL",
        _import,
        wait=True,
        ref="TEMPLATE",
    )
    imported.add_argument("url")
    imported.add_argument("--sha256", help="the image's sha256 (checked)")
    imported.add_argument("--size", type=int, help="the image's size in bytes (checked)")

    convert = actions.add(
        "convert",
        "convert a template's image to another format",
        _convert,
        wait=True,
        ref="TEMPLATE",
    )
    convert.add_argument("format", choices=["raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi"])
    convert.add_argument(
        "--compare",
        action="store_true",
        help="check the result against the source with qemu-img compare (reads both whole)",
    )

    actions.add("delete", "delete a template", _delete, ref="TEMPLATE")


def _path(template_id: str, suffix: str = "") -> str:
    return f"/templates/{quote(template_id, safe='')}{suffix}"


async def _template(client: Client, args: argparse.Namespace, suffix: str = "") -> str:
    """The template's path (``args.id`` an id or a name), then ``suffix``."""
    return _path(await resolve(client, TEMPLATE, args.id), suffix)


async def _list(client: Client, args: argparse.Namespace) -> int:
    return await list_records(client, args, "/templates", _COLUMNS, ("name", args.name))


async def _show(client: Client, args: argparse.Namespace) -> int:
    show_one(await client.call("GET", await _template(client, args)), args.output, _FIELDS)
    return 0


async def _create(client: Client, args: argparse.Namespace) -> int:
    datacenter = args.datacenter and await resolve(client, DATACENTER, args.datacenter)
    body = body_of(
        {
            "name": args.name,
            "os_type": args.os_type,
            "min_cpus": args.min_cpus,
            "min_memory_mib": args.min_memory,
        },
        ("datacenter_id", datacenter or None),
        ("tenant_id", args.tenant),
    )
    if args.public:
        body["tenant_id"] = None
    show_one(await client.call("POST", "/templates", body=body), args.output, _FIELDS)
    return 0


async def _import(client: Client, args: argparse.Namespace) -> int:
    body = body_of({"url": args.url}, ("sha256", args.sha256 or None), ("size", args.size or None))
    path = await _template(client, args, "/import")
    return await accepted(client, await client.call("POST", path, body=body), args)


async def _convert(client: Client, args: argparse.Namespace) -> int:
    path = await _template(client, args, "/conversions")
    body: dict[str, Any] = {"format": args.format}
    if args.compare:
        body["compare"] = True
    task = await client.call("POST", path, body=body)
    return await accepted(client, task, args)


async def _delete(client: Client, args: argparse.Namespace) -> int:
    await client.call("DELETE", await _template(client, args))
    return 0


async def _upload(client: Client, args: argparse.Namespace) -> int:
    path: Path = args.file
    size = (await asyncio.to_thread(path.stat)).st_size
    digest = await asyncio.to_thread(_sha256, path)
    bar = ByteProgress(f"upload {path.name}", size)
    template_id = await resolve(client, TEMPLATE, args.id)
    template = await upload_file(client, template_id, path, size, digest, bar)
    bar.done(template["state"])
    show_one(template, args.output, _FIELDS)
    return 0 if template["state"] == "AVAILABLE" else 1


async def upload_file(
    client: Client, template_id: str, path: Path, size: int, digest: str, bar: ByteProgress
) -> dict[str, Any]:
    """PUT the file; after a dropped connection, resume from the byte the server holds."""
    params: dict[str, str | int] = {"size": size, "sha256": digest}
    offset = 0
    for attempt in range(1, _ATTEMPTS + 1):
        headers = {"Content-Range": f"bytes {offset}-{size - 1}/{size}"} if offset else {}
        try:
            reply: dict[str, Any] = await client.send_body(
                "PUT",
                _path(template_id, "/image"),
                _chunks(path, offset, bar),
                params=params,
                headers=headers,
            )
            return reply
        except ApiFailure as exc:
            if attempt == _ATTEMPTS:
                raise
            offset = await _resume_at(client, template_id, exc, attempt)
            bar.note(f"upload interrupted ({exc}); resuming at byte {offset}")
    raise AssertionError("unreachable")


async def _resume_at(client: Client, template_id: str, failure: ApiFailure, attempt: int) -> int:
    """Where to resume after ``failure``, or raise it if resuming cannot help."""
    if failure.status == 416 and "offset" in failure.details:
        return int(failure.details["offset"])  # the server says where
    if failure.status == 409 and failure.code == "conflict":
        pass  # the dropped request is still being wound up on the server: ask again soon
    elif failure.code is not None:
        raise failure
    await asyncio.sleep(0.2 * attempt)
    held = await client.call("GET", _path(template_id))
    return int(held.get("uploaded_bytes") or 0)


async def _chunks(path: Path, offset: int, bar: ByteProgress) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        f.seek(offset)
        sent = offset
        while block := await asyncio.to_thread(f.read, _CHUNK):
            yield block
            sent += len(block)
            bar.update(sent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class ByteProgress:
    """Bytes sent of a total, on stderr: a redrawn bar on a terminal, a line per 10 %
    otherwise."""

    def __init__(self, label: str, total: int, out: TextIO | None = None) -> None:
        self._label, self._total = label, max(total, 1)
        self._out = out or sys.stderr
        self._tty = self._out.isatty()
        self._began = time.monotonic()
        self._shown = -1

    def update(self, sent: int) -> None:
        fraction = min(sent / self._total, 1.0)
        rate = sent / _MIB / max(time.monotonic() - self._began, 1e-6)
        text = f"{fraction:4.0%} {sent / _MIB:.1f}/{self._total / _MIB:.1f} MiB {rate:.0f} MiB/s"
        if self._tty:
            filled = int(fraction * 30)
            self._out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}")
            self._out.flush()
        elif int(fraction * 10) > self._shown:
            self._shown = int(fraction * 10)
            self._out.write(f"{self._label}: {text}\n")
            self._out.flush()

    def note(self, message: str) -> None:
        self._out.write(("\n" if self._tty else "") + message + "\n")
        self._out.flush()

    def done(self, state: str) -> None:
        self._out.write(("\n" if self._tty else "") + f"{self._label}: {state}\n")
        self._out.flush()
