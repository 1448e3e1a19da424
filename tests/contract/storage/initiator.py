"""The initiator's side: what libiscsi's tools and QEMU's own iSCSI initiator see of an export.

Nothing here knows the storage driver: every probe takes a :class:`Connection` (and optionally
overrides the initiator name or secret to be refused with).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

from storage_drivers.base import Connection

TIMEOUT = 30.0
MIB = 1024 * 1024


@dataclass
class Result:
    returncode: int
    out: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def run(*argv: str) -> Result:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(errors="replace"))


def url(conn: Connection, secret: str | None = None) -> str:
    auth = f"{conn.chap_username}%{secret or conn.chap_secret}@" if conn.chap_username else ""
    return f"iscsi://{auth}{conn.portal}/{conn.target_iqn}/{conn.lun}"


async def inquiry(
    conn: Connection, initiator: str | None = None, secret: str | None = None
) -> Result:
    """``iscsi-inq``: log in and ask the LUN what it is."""
    return await run("iscsi-inq", "-i", initiator or conn.initiator, url(conn, secret))


async def capacity_bytes(conn: Connection) -> int:
    """The LUN's size as ``iscsi-readcapacity16`` reads it."""
    result = await run("iscsi-readcapacity16", "-i", conn.initiator, url(conn))
    assert result.ok, result.out
    match = re.search(r"Total size:(\d+)", result.out)
    assert match, result.out
    return int(match[1])


def _qemu_args(conn: Connection) -> list[str]:
    opts = (
        f"driver=iscsi,transport=tcp,portal={conn.portal},target={conn.target_iqn},"
        f"lun={conn.lun},initiator-name={conn.initiator}"
    )
    if conn.chap_username:
        opts += f",user={conn.chap_username},password-secret=chap"
        return ["--object", f"secret,id=chap,data={conn.chap_secret}", "--image-opts", opts]
    return ["--image-opts", opts]


async def qemu_virtual_size(conn: Connection) -> int:
    """The LUN's size as QEMU's initiator sees it (``qemu-img info``)."""
    result = await run("qemu-img", "info", "--output=json", *_qemu_args(conn))
    assert result.ok, result.out
    return int(json.loads(result.out)["virtual-size"])


async def qemu_io(conn: Connection, *commands: str) -> Result:
    """Run ``qemu-io`` commands (``write -P 0xab 0 1M``, ``read -P 0xab 0 1M``) on the LUN."""
    args = [arg for command in commands for arg in ("-c", command)]
    return await run("qemu-io", *_qemu_args(conn), *args)


async def write_image(conn: Connection, raw: str) -> None:
    """Copy the raw image file ``raw`` onto the start of the LUN (``qemu-img convert``)."""
    args = _qemu_args(conn)
    objects, target = args[: args.index("--image-opts")], args[-1]
    result = await run(
        "qemu-img", "convert", *objects, "-n", "--target-image-opts", "-f", "raw", raw, target
    )
    assert result.ok, result.out


async def write_pattern(conn: Connection, pattern: int, offset: int, length: int) -> None:
    result = await qemu_io(conn, f"write -P {pattern:#x} {offset} {length}")
    assert result.ok and f"wrote {length}/{length} bytes" in result.out, result.out


async def has_pattern(conn: Connection, pattern: int, offset: int, length: int) -> bool:
    """Whether every byte of the range reads as ``pattern`` (qemu-io verifies it)."""
    result = await qemu_io(conn, f"read -P {pattern:#x} {offset} {length}")
    if "Pattern verification failed" in result.out:
        return False
    assert result.ok and f"read {length}/{length} bytes" in result.out, result.out
    return True


class OpenSession:
    """An interactive ``qemu-io`` holding a logged-in session on the LUN until ``close``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @classmethod
    async def open(cls, conn: Connection) -> OpenSession:
        proc = await asyncio.create_subprocess_exec(
            "qemu-io", *_qemu_args(conn),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        return cls(proc)

    async def close(self) -> str:
        """Quit qemu-io; its whole output."""
        out, _ = await asyncio.wait_for(self._proc.communicate(b"quit\n"), TIMEOUT)
        return out.decode(errors="replace")
