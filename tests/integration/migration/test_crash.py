"""``kill -9`` of a real ``cloudcore serve`` in the middle of a live migration between two real
libvirtd instances: the daemons go on without it. The restarted node settles the task from
what both hypervisors show: the VM running on exactly one daemon, the store placing it there,
the target's hold moved with it or given back, never counted twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from actors.guest import domain_name
from cloudcore.config import Settings
from cloudcore.store.records import VM, Datacenter, Host, Task, TaskState, Tenant, VMState
from cloudcore.store.sqlite import SqliteStore
from tests.cloud import cloud_settings
from tests.component.cli.conftest import Lines
from tests.integration.migration.conftest import Daemon
from tests.integration.migration.test_two_libvirtds import daemon_host
from tests.waiting import eventually

_MEMORY_MIB = 256


async def _prepare(data_dir: Path, daemons: tuple[Daemon, Daemon]) -> None:
    """A store with datacenter dc1 of the two daemons (so the node makes no demo hosts)."""
    settings: Settings = cloud_settings(data_dir)
    store = await SqliteStore.connect(data_dir / "cloudcore.db")
    try:
        await store.upgrade()
        await store.create(Tenant(id="t1", name="t1"))
        await store.create(Datacenter(id="dc1", name="dc1"))
        for daemon in daemons:
            await store.create(daemon_host(settings, daemon, "1"))
    finally:
        await store.close()


@asynccontextmanager
async def _node(
    data_dir: Path, **orchestrator: str
) -> AsyncIterator[tuple[subprocess.Popen[str], str, str]]:
    """``cloudcore serve`` on ``data_dir``; ``orchestrator``: more of its settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCORE_")}
    env |= {
        "CLOUDCORE_NODE__DATA_DIR": str(data_dir),
        "CLOUDCORE_API__PORT": "0",
        "CLOUDCORE_LOG__FORMAT": "json",
        "CLOUDCORE_ORCHESTRATOR__WATCHDOG_INTERVAL": "1.0",
        "CLOUDCORE_ORCHESTRATOR__STEP_DEADLINE": "60.0",
    }
    env |= {f"CLOUDCORE_ORCHESTRATOR__{k.upper()}": v for k, v in orchestrator.items()}
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "cloudcore.app.cli", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=data_dir,
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
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.wait)
        await asyncio.to_thread(lines.join)
        if proc.stderr is not None:
            proc.stderr.close()


async def _call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with session.request(method, url, json=body) as reply:
        assert reply.status < 300, await reply.text()
        return await reply.json()


async def _ended(session: aiohttp.ClientSession, url: str, task_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        task: dict[str, Any] = await _call(session, "GET", f"{url}/tasks/{task_id}")
        return task if task["state"] not in ("PENDING", "RUNNING") else None

    ended: dict[str, Any] = await eventually(done, timeout=90, interval=0.2)
    return ended


async def _store_view(data_dir: Path, vm_id: str) -> tuple[VM, dict[str, tuple[int, int]], Task]:
    store = await SqliteStore.connect(data_dir / "cloudcore.db")
    try:
        vm = await store.get(VM, vm_id)
        hosts = (await store.list(Host)).items
        tasks = (await store.list(Task, where={"subject": f"vm/{vm_id}"})).items
        migrate = next(t for t in tasks if t.kind == "vm.migrate")
        return vm, {h.id: (h.cpus_used, h.memory_mib_used) for h in hosts}, migrate
    finally:
        await store.close()


async def test_kill_9_mid_migration_settles_on_the_one_daemon_that_runs_the_vm(
    tmp_path: Path, two_libvirtds: tuple[Daemon, Daemon]
) -> None:
    a, b = two_libvirtds
    daemons = {"host-a": a, "host-b": b}
    await _prepare(tmp_path, two_libvirtds)
    async with _node(tmp_path) as (proc, url, token):
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            body = {"name": "mover", "tenant_id": "t1", "datacenter_id": "dc1", "cpus": 1}
            created = await _call(
                session, "POST", f"{url}/vms", {**body, "memory_mib": _MEMORY_MIB}
            )
            assert (await _ended(session, url, created["id"]))["state"] == "SUCCEEDED"
            vm_id = created["subject"].removeprefix("vm/")
            vm = await _call(session, "GET", f"{url}/vms/{vm_id}")
            source = vm["host_id"]
            target = "host-b" if source == "host-a" else "host-a"
            task = await _call(session, "POST", f"{url}/vms/{vm_id}/migrate", {"host_id": target})

            async def copying() -> bool:
                view = await _call(session, "GET", f"{url}/tasks/{task['id']}")
                steps = view.get("steps") or []
                return bool(steps) and steps[0]["data"].get("bytes_processed", 0) > 0

            await eventually(copying, timeout=30, interval=0.05)
            os.kill(proc.pid, signal.SIGKILL)

    # What the dead node left: the VM MIGRATING on its source, the hold on the target.
    left, claims, migrate = await _store_view(tmp_path, vm_id)
    assert (left.host_id, left.state, migrate.state) == (source, VMState.MIGRATING, "RUNNING")
    assert claims[target] == (1, _MEMORY_MIB) and claims[source] == (1, _MEMORY_MIB)
    assert migrate.data["hold"] == {"host": target, "cpus": 1, "memory_mib": _MEMORY_MIB}

    async with _node(tmp_path) as (proc, url, token):
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            settled = await _ended(session, url, migrate.id)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0

    vm_after, claims, _ = await _store_view(tmp_path, vm_id)
    name = domain_name(vm_id)
    running = [h for h, d in daemons.items() if d.state(name) == "running"]
    present = [h for h, d in daemons.items() if d.state(name) != "absent"]
    assert running == present == [vm_after.host_id]  # on exactly one daemon, where the store says
    assert vm_after.state is VMState.RUNNING and vm_after.task_id is None
    expected = TaskState.SUCCEEDED if vm_after.host_id == target else TaskState.FAILED
    assert settled["state"] == expected, settled
    other = source if vm_after.host_id == target else target
    assert claims == {vm_after.host_id: (1, _MEMORY_MIB), other: (0, 0)}  # the hold moved or gone
