"""A real ``cloudcore serve`` on a private SQLite data directory, for the tests that kill it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from tests.component.cli.conftest import Lines

__all__ = ["kill_group", "serve_node"]


@asynccontextmanager
async def serve_node(
    data_dir: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[subprocess.Popen[str], str, str]]:
    """The node process, its API's base URL and the admin token. The node leads a process group
    of its own: on the way out the group is killed (-9), with any child the node left."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCORE_")}
    base |= {
        "CLOUDCORE_NODE__DATA_DIR": str(data_dir),
        "CLOUDCORE_STORE__AUTO_UPGRADE": "true",
        "CLOUDCORE_API__PORT": "0",
        "CLOUDCORE_API__RATE_LIMIT": "100000",
        "CLOUDCORE_API__RATE_BURST": "100000",
        "CLOUDCORE_LOG__FORMAT": "json",
        **(env or {}),
    }
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "cloudcore.app.cli", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=base,
        cwd=data_dir,
        start_new_session=True,
    )
    lines = Lines(proc.stderr)
    try:
        url = ""
        while not url:
            record = json.loads(await asyncio.to_thread(lines.next))
            if record.get("event") == "api.listening":
                url = str(record["url"])
        yield proc, url, (data_dir / "admin-token").read_text().strip()
    finally:
        kill_group(proc)
        await asyncio.to_thread(proc.wait)
        await asyncio.to_thread(lines.join)
        if proc.stderr is not None:
            proc.stderr.close()


def kill_group(proc: subprocess.Popen[str]) -> None:
    """``kill -9`` of the node and every process of its group (what it spawned)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
