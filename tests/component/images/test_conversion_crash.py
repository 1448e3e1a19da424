"""``kill -9`` of a real ``cloudcore serve`` in the middle of a conversion: the restarted node
starts the same task again, which succeeds, and no half file is left, in the library or in
scratch. The first node's qemu-img stalls ``convert`` after writing part of its output, so the
kill lands in the middle; the second node has the real one."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloudcore.store.records import Task
from cloudcore.store.sqlite import SqliteStore
from tests.component.images.test_converter import STALLING
from tests.component.serve import kill_group, serve_node
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None,
    reason="qemu-img is not installed (scripts/lib.sh installs qemu-utils)",
)


async def _task(session: aiohttp.ClientSession, url: str, task_id: str) -> dict[str, Any]:
    async with session.get(f"{url}/tasks/{task_id}") as reply:
        assert reply.status == 200, await reply.text()
        task: dict[str, Any] = await reply.json()
        return task


async def _upload_template(session: aiohttp.ClientSession, url: str, image: bytes) -> str:
    async with session.post(f"{url}/templates", json={"name": "golden", "tenant_id": None}) as r:
        assert r.status == 201, await r.text()
        template_id = str((await r.json())["id"])
    params = {"size": len(image), "sha256": hashlib.sha256(image).hexdigest()}
    body = io.BytesIO(image)
    async with session.put(f"{url}/templates/{template_id}/image", params=params, data=body) as r:
        assert r.status == 200, await r.text()
    return template_id


async def test_kill_9_mid_conversion_restarts_it_and_leaves_no_half_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    raw, qcow2 = tmp_path / "src.raw", tmp_path / "src.qcow2"
    with raw.open("wb") as f:
        f.write(b"\x5a" * 1024 * 1024)
        f.truncate(8 * 1024 * 1024)
    args = ["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)]
    await asyncio.to_thread(subprocess.run, args, check=True)
    stalling = tmp_path / "qemu-img"
    stalling.write_text(STALLING)
    stalling.chmod(0o755)
    repo = data_dir / "images" / "_shared"

    async with serve_node(data_dir, {"CLOUDCORE_IMAGES__QEMU_IMG": str(stalling)}) as node:
        proc, url, token = node
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            template_id = await _upload_template(session, url, qcow2.read_bytes())
            body = {"format": "vmdk"}
            async with session.post(f"{url}/templates/{template_id}/conversions", json=body) as r:
                assert r.status == 202, await r.text()
                task_id = str((await r.json())["id"])

            async def at_40_percent() -> bool:
                steps = (await _task(session, url, task_id))["steps"]
                return bool(steps) and steps[-1]["data"].get("percent") == 40.0

            await eventually(at_40_percent, timeout=30)
        kill_group(proc)  # the node and its stalled qemu-img, -9
    half = [p.name for p in (repo / "tmp").rglob("*") if p.is_file()]
    assert half == [f"{task_id}.vmdk"]

    async with serve_node(data_dir) as (proc, url, token):
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=auth) as session:

            async def ended() -> dict[str, Any] | None:
                task = await _task(session, url, task_id)
                return task if task["state"] not in ("PENDING", "RUNNING") else None

            done = await eventually(ended, timeout=60)
            assert done["state"] == "SUCCEEDED", done["error"]
            assert [s["name"] for s in done["steps"]] == ["convert", "convert", "store"]
            async with session.get(f"{url}/templates/{template_id}") as r:
                template = await r.json()
            assert template["state"] == "AVAILABLE"
            assert set(template["formats"]) == {"qcow2", "vmdk"}
    assert [p for p in (repo / "tmp").rglob("*") if p.is_file()] == []
    stored = sorted(p.name for p in (repo / "objects").iterdir())
    assert stored == sorted(template["formats"].values())
    vmdk = repo / "objects" / template["formats"]["vmdk"]
    assert hashlib.sha256(vmdk.read_bytes()).hexdigest() == template["formats"]["vmdk"]
    store = await SqliteStore.connect(data_dir / "cloudcore.db")
    try:
        page = await store.list(Task, where={"subject": f"template/{template_id}"})
        assert [t.id for t in page.items] == [task_id]  # started again, not asked again
    finally:
        await store.close()
