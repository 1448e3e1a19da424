"""A template's VHDX copied to a Hyper-V host through WinRM itself (blocking; the driver's
worker thread).

WinRM carries commands, not files: the image goes in PowerShell scripts, each appending one piece
to ``<dir>\\<name>.vhdx.partial`` (``Add-Content -Encoding Byte``, Windows PowerShell 5.1's way
of writing bytes). A piece of data travels base64 in the script's arguments, about 6 KiB a
script (what fits a command line of 32,767 characters once the script is UTF-16 and base64
itself); a run of zero bytes, which a dynamic VHDX is mostly made of, travels as its length
(``New-Object byte[]``) and costs one script per 64 MiB. The copy's ``Get-FileHash`` must match
the local file's sha256 before it is renamed to ``<name>.vhdx`` (whole or not at all); a copy
cut short leaves the partial file, which the next copy or ``remove_image`` deletes.

``dir`` is ``extra["image_dir"]``, else the host's ``VirtualHardDiskPath`` (``Get-VMHost``).
This is the path the WinRM simulator models; a production host with gigabytes to receive would
rather copy from an SMB share (``Copy-Item \\\\library\\...``), which it does not.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cloudcore.errors import DriverError
from hypervisor_drivers.types import FileDisk

if TYPE_CHECKING:
    from hypervisor_drivers.hyperv._client import HyperVClient

__all__ = ["import_image", "remove_image"]

#: Bytes of data a script carries: 4/3 base64 in JSON, 4/3 again for the frame's base64, x2 as
#: UTF-16, 4/3 as the -EncodedCommand: about 4.7 characters of command line a byte.
DATA_PIECE = 6 * 1024
#: The longest run of zeros one script appends.
ZERO_RUN = 64 * 1024 * 1024
_APPEND_DATA = [
    "$b = [Convert]::FromBase64String($a.data)",
    "Add-Content -Path $a.path -Value $b -Encoding Byte",
]
_APPEND_ZEROS = [
    "$b = New-Object -TypeName 'byte[]' -ArgumentList $a.count",
    "Add-Content -Path $a.path -Value $b -Encoding Byte",
]


def image_dir(client: HyperVClient) -> str:
    configured = client.settings.extra.get("image_dir")
    if configured:
        return configured.rstrip("\\")
    host = client.ps(["Get-VMHost | Select-Object VirtualHardDiskPath | ConvertTo-Json -Compress"])
    found = host.get("VirtualHardDiskPath") if isinstance(host, dict) else None
    if not isinstance(found, str) or not found:
        raise DriverError("Hyper-V did not say its VirtualHardDiskPath", code="malformed")
    return found.rstrip("\\")


def import_image(client: HyperVClient, path: str, name: str) -> FileDisk:
    """Copy the local VHDX ``path`` to the host as ``<dir>\\<name>.vhdx``; its disk."""
    target = f"{image_dir(client)}\\{name}.vhdx"
    partial = f"{target}.partial"
    _remove(client, [partial, target])
    digest = hashlib.sha256()
    for piece, zeros in _pieces(path):
        if zeros:
            client.ps(_APPEND_ZEROS, {"path": partial, "count": zeros})
            digest.update(bytes(zeros))
        else:
            data = base64.b64encode(piece).decode("ascii")
            client.ps(_APPEND_DATA, {"path": partial, "data": data})
            digest.update(piece)
    copied = client.ps(
        [
            "Get-FileHash -Path $a.path -Algorithm SHA256 | Select-Object Hash"
            " | ConvertTo-Json -Compress"
        ],
        {"path": partial},
    )
    theirs = str(copied.get("Hash", "") if isinstance(copied, dict) else "").lower()
    if theirs != digest.hexdigest():
        _remove(client, [partial])
        raise DriverError(
            f"the copy of {name}.vhdx on the host hashes to {theirs or 'nothing'}, "
            f"not {digest.hexdigest()}",
            code="copy",
        )
    client.ps(
        ["Move-Item -Path $a.partial -Destination $a.path -Force"],
        {
            "partial": partial,
            "path": target,
        },
    )
    return FileDisk(path=target, format="vhdx")


def remove_image(client: HyperVClient, name: str) -> None:
    """Remove ``<name>.vhdx`` (and a partial copy) from the host; no-op if there is none."""
    target = f"{image_dir(client)}\\{name}.vhdx"
    _remove(client, [f"{target}.partial", target])


def _remove(client: HyperVClient, paths: list[str]) -> None:
    client.ps(["Remove-Item -Path $a.paths -Force -ErrorAction SilentlyContinue"], {"paths": paths})


def _pieces(path: str) -> Iterator[tuple[bytes, int]]:
    """The file as (data, 0) pieces of at most DATA_PIECE bytes and (b"", n) runs of n zeros."""
    zeros = 0
    with open(path, "rb") as f:
        while piece := f.read(DATA_PIECE):
            if piece.count(0) == len(piece):
                zeros += len(piece)
                if zeros >= ZERO_RUN:
                    yield b"", zeros
                    zeros = 0
                continue
            if zeros:
                yield b"", zeros
                zeros = 0
            yield piece, 0
    if zeros:
        yield b"", zeros
