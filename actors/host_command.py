"""A host's own command (its fence or power capability): a shell command run with the host's id
(and more) in its environment, within a deadline; exit 0 is success."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

__all__ = ["run_host_command"]


async def run_host_command(
    command: str, env: Mapping[str, str], timeout: float, what: str
) -> str | None:
    """Run ``command`` with ``env`` added to this process's environment; None when it exits 0,
    else why it failed, named by ``what`` ("fence command": "fence command exited 1: ...").
    A command past ``timeout`` seconds is killed."""
    proc = await asyncio.create_subprocess_shell(
        command,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"{what} timed out after {timeout:g} s"
    if proc.returncode != 0:
        return f"{what} exited {proc.returncode}: {err.decode()[-200:]}"
    return None
