"""tgtadm, run as an asyncio subprocess with a deadline, and its ``show`` output parsed.

Every request goes to one tgtd through its control socket (``--control-port``). Passwords are
passed on tgtadm's command line (it has no other way), so they are never put in an error message
or a log line; the calling user's process list is the one place they show.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

from cloudcore.errors import BackendUnavailable
from storage_drivers.tgt._errors import translate

__all__ = ["Target", "Tgtadm", "parse_targets", "run_tool"]

_TARGET = re.compile(r"^Target (\d+): (\S+)$")
_LUN = re.compile(r"^LUN: (\d+)$")
_BACKING = re.compile(r"^Backing store path: (.*)$")
_NEXUS = re.compile(r"^I_T nexus: \d+$")


@dataclass
class Target:
    """One target as ``tgtadm --op show`` reports it."""

    tid: int
    iqn: str
    luns: dict[int, str] = field(default_factory=dict)  # LUN -> backing store path
    sessions: int = 0
    accounts: list[str] = field(default_factory=list)
    acls: list[str] = field(default_factory=list)


def parse_targets(text: str) -> list[Target]:
    """The targets in the output of ``tgtadm --lld iscsi --op show --mode target``."""
    targets: list[Target] = []
    section = ""
    lun = -1
    for raw in text.splitlines():
        line = raw.strip()
        if match := _TARGET.match(line):
            targets.append(Target(int(match[1]), match[2]))
            section = ""
            continue
        if not targets or not line:
            continue
        target = targets[-1]
        if line.endswith("information:"):
            section = line
        elif section.startswith("LUN") and (match := _LUN.match(line)):
            lun = int(match[1])
        elif section.startswith("LUN") and (match := _BACKING.match(line)):
            target.luns[lun] = match[1].strip()
        elif section.startswith("I_T nexus") and _NEXUS.match(line):
            target.sessions += 1
        elif section.startswith("Account"):
            target.accounts.append(line.removesuffix(" (outgoing)"))
        elif section.startswith("ACL"):
            target.acls.append(line)
    return targets


async def run_tool(argv: list[str], timeout: float, what: str) -> tuple[int, str, str]:
    """Run ``argv`` with a deadline: (exit code, stdout, stderr). A run that misses its deadline
    is killed and raises ``BackendUnavailable``; ``what`` names it in errors."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise BackendUnavailable(f"{argv[0]} is not installed ({what})") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise BackendUnavailable(f"{what} took longer than {timeout:g} s") from exc
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class Tgtadm:
    """The tgtadm requests the driver makes, against one tgtd."""

    def __init__(self, control_port: int | None, timeout: float, binary: str = "tgtadm") -> None:
        self._prefix = [binary]
        if control_port is not None:
            self._prefix += ["--control-port", str(control_port)]
        self._timeout = timeout

    async def _run(self, what: str, *args: str) -> str:
        code, out, err = await run_tool(
            [*self._prefix, "--lld", "iscsi", *args], self._timeout, what
        )
        if code != 0:
            raise translate(code, err, what)
        return out

    async def targets(self) -> list[Target]:
        return parse_targets(await self._run("show targets", "--op", "show", "--mode", "target"))

    async def new_target(self, tid: int, iqn: str) -> None:
        await self._run(f"new target {iqn}", "--op", "new", "--mode", "target",
                        "--tid", str(tid), "--targetname", iqn)  # fmt: skip

    async def delete_target(self, tid: int) -> None:
        """Delete the target even with sessions open (they are cut)."""
        await self._run(f"delete target {tid}", "--op", "delete", "--mode", "target",
                        "--force", "--tid", str(tid))  # fmt: skip

    async def new_lun(self, tid: int, lun: int, path: str) -> None:
        await self._run(f"new lun {lun} of target {tid}", "--op", "new", "--mode", "logicalunit",
                        "--tid", str(tid), "--lun", str(lun), "--backing-store", path)  # fmt: skip

    async def delete_lun(self, tid: int, lun: int) -> None:
        await self._run(f"delete lun {lun} of target {tid}", "--op", "delete",
                        "--mode", "logicalunit", "--tid", str(tid), "--lun", str(lun))  # fmt: skip

    async def new_account(self, user: str, password: str) -> None:
        await self._run(f"new account {user}", "--op", "new", "--mode", "account",
                        "--user", user, "--password", password)  # fmt: skip

    async def delete_account(self, user: str) -> None:
        await self._run(f"delete account {user}", "--op", "delete", "--mode", "account",
                        "--user", user)  # fmt: skip

    async def bind_account(self, tid: int, user: str) -> None:
        await self._run(f"bind account {user} to target {tid}", "--op", "bind",
                        "--mode", "account", "--tid", str(tid), "--user", user)  # fmt: skip

    async def bind_initiator(self, tid: int, initiator: str) -> None:
        await self._run(f"allow {initiator} on target {tid}", "--op", "bind", "--mode", "target",
                        "--tid", str(tid), "--initiator-name", initiator)  # fmt: skip

    async def unbind_initiator(self, tid: int, initiator: str) -> None:
        await self._run(f"disallow {initiator} on target {tid}", "--op", "unbind",
                        "--mode", "target", "--tid", str(tid),
                        "--initiator-name", initiator)  # fmt: skip
