"""``kill -9`` of a real ``cloudcore serve`` in the middle of a burst of creates leaves no VM
without its deploy task and no quota usage other than what exists; the restarted node agrees.

The node runs on a private SQLite data directory; the test reads its store directly."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from cloudcore.store.records import VM, Task, VMState, new_id
from cloudcore.store.sqlite import SqliteStore
from tests.component.serve import serve_node

_RESOURCES = {"vms": 100_000, "cpus": 100_000, "memory_mib": 100_000_000}
_IN_FLIGHT = 48


async def _create(session: aiohttp.ClientSession, url: str, accepted: asyncio.Queue[str]) -> None:
    body = {"name": "web", "tenant_id": "demo", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 64}
    headers = {"Idempotency-Key": new_id("k-")}
    while True:
        try:
            async with session.post(f"{url}/vms", json=body, headers=headers) as reply:
                if reply.status == 202:
                    accepted.put_nowait((await reply.json())["id"])
        except (aiohttp.ClientError, OSError):
            return  # the node is gone
        headers = {"Idempotency-Key": new_id("k-")}


async def _check_store(data_dir: Path) -> tuple[int, int]:
    """No VM without its task, and usage equal to what exists; (VMs, tasks) found."""
    store = await SqliteStore.connect(data_dir / "cloudcore.db")
    try:
        vms = [vm async for vm in _all(store, VM) if vm.tenant_id == "demo"]
        tasks = [t async for t in _all(store, Task)]
        deployed = {t.subject for t in tasks if t.kind == "vm.deploy"}
        orphans = [vm.id for vm in vms if f"vm/{vm.id}" not in deployed]
        assert orphans == [], f"{len(orphans)} VMs without a deploy task"
        alive = [vm for vm in vms if vm.state is not VMState.DELETED]
        exists = {
            "vms": len(alive),
            "cpus": sum(vm.spec.cpus for vm in alive),
            "memory_mib": sum(vm.spec.memory_mib for vm in alive),
        }
        used = {q.resource: q.used for q in await store.get_quotas("demo")}
        assert used == exists, f"quota usage {used}, what exists {exists}"
        return len(vms), len(tasks)
    finally:
        await store.close()


async def _all(store: SqliteStore, kind: type) -> AsyncIterator:  # type: ignore[type-arg]
    cursor = None
    while True:
        page = await store.list(kind, after=cursor, limit=1000)
        for item in page.items:
            yield item
        cursor = page.next_cursor
        if cursor is None:
            return


async def test_kill_9_during_creates_leaves_no_orphan_and_no_quota_drift(tmp_path: Path) -> None:
    async with serve_node(tmp_path) as (proc, url, token):
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            for resource, maximum in _RESOURCES.items():
                async with session.put(
                    f"{url}/tenants/demo/quotas/{resource}", json={"maximum": maximum}
                ) as reply:
                    assert reply.status == 200, await reply.text()
            accepted: asyncio.Queue[str] = asyncio.Queue()
            burst = [
                asyncio.create_task(_create(session, url, accepted)) for _ in range(_IN_FLIGHT)
            ]
            for _ in range(3 * _IN_FLIGHT):  # mid-burst: every client has a create in flight
                await asyncio.wait_for(accepted.get(), 60)
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.gather(*burst)
    assert await _check_store(tmp_path) >= (3 * _IN_FLIGHT, 3 * _IN_FLIGHT)

    async with serve_node(tmp_path) as (proc, url, token):  # the node restarts on what was left
        auth = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(headers=auth) as session,
            session.get(f"{url}/tenants/demo/quotas") as reply,
        ):
            assert reply.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    await _check_store(tmp_path)
