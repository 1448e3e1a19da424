"""scripts/bench api: the HTTP gateway under load, against a bare aiohttp handler as the ceiling.

Prints ONE JSON object. The gateway serves from its own process on a PostgreSQL store (a scratch
database, created for the run and dropped after it) holding --vms VMs; the load generator is
another process: an aiohttp client keeping --connections requests in flight for --seconds after
--warmup seconds, timing every request. Three loads, one after the other, by the same generator:

- ``aiohttp_hello``: GET on a bare aiohttp handler (a small JSON body) in a process of its own;
  the ceiling this machine and this generator allow.
- ``get_vm_page``: GET /api/v1/vms?limit=100 with an admin token, the cursor walking the 1,000
  pages of 100 VMs (each connection starts at another page).
- ``create_vm``: POST /api/v1/vms (202). The node runs no datacenter actor, so each deploy is
  written PENDING (the VM, its task, the quota) for the node that runs the datacenter: this
  measures the gateway and the store's write path, not hypervisors.

Goals: get_vm_page_rps >= 0.3 x aiohttp_hello_rps, get_vm_page_p99_ms <= 50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit

SPAWN = mp.get_context("spawn")
GOAL_RATIO = 0.3
GOAL_P99_MS = 50.0
PAGE = 100
#: The body of each POST /vms (the admin creates the VMs for the benchmark tenant).
CREATE = {"name": "web", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 256, "tenant_id": "bench"}


# -- the scratch database ------------------------------------------------------------------


async def seed(dsn: str, vms: int) -> tuple[str, list[str]]:
    """The schema, a tenant with ``vms`` VMs (COPY), an admin; the admin's token and the
    cursors of every page."""
    import asyncpg  # type: ignore[import-untyped]

    from cloudcore.app.gateway.bootstrap import issue_token
    from cloudcore.store._table import encode_cursor, table_of
    from cloudcore.store.postgres import PostgresStore
    from cloudcore.store.records import (
        VM,
        Datacenter,
        Role,
        Tenant,
        User,
        VMSpec,
        VMState,
        new_id,
    )

    store = await PostgresStore.connect(dsn, pool_size=2)
    try:
        await store.upgrade()
        await store.create(Tenant(id="bench", name="bench"))
        await store.create(Tenant(id="system", name="system"))
        await store.create(Datacenter(id="dc1", name="dc1"))
        admin = await store.create(
            User(id=new_id("usr-"), tenant_id="system", name="admin", role=Role.ADMIN)
        )
        token = await issue_token(store, admin, "bench")
        sample = await store.create(
            VM(
                id=new_id(),
                tenant_id="bench",
                datacenter_id="dc1",
                name="vm0",
                spec=VMSpec(cpus=2, memory_mib=2048),
                state=VMState.RUNNING,
            )
        )
    finally:
        await store.close()
    table = table_of(VM)
    template = table.encode(sample)
    ids = [sample.id] + [new_id() for _ in range(vms - 1)]
    index = {c: i for i, c in enumerate(table.columns)}
    rows = []
    for n, vm_id in enumerate(ids):
        row = list(template)
        row[index["id"]] = vm_id
        row[index["name"]] = f"vm{n}"
        rows.append(tuple(row))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DELETE FROM vms WHERE id = '{sample.id}'")
        await conn.copy_records_to_table("vms", records=rows, columns=list(table.columns))
        await conn.execute("ANALYZE vms")
    finally:
        await conn.close()
    ids.sort()
    cursors = [""] + [encode_cursor(ids[p * PAGE - 1]) for p in range(1, len(ids) // PAGE)]
    return token, cursors


_ADMIN_DSN = os.environ.get(
    "CLOUDCORE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# -- the servers (each in a process of its own) ----------------------------------------------


def gateway_process(dsn: str, port: int, workers: int, ready: Connection) -> None:
    asyncio.run(_serve_gateway(dsn, port, workers, ready))


async def _serve_gateway(dsn: str, port: int, workers: int, ready: Connection) -> None:
    import msgspec

    from actors.orchestrator import Orchestrator
    from actors.services import Services
    from cloudcore.app.gateway import Gateway, start_api
    from cloudcore.app.gateway.app import bound_port
    from cloudcore.app.gateway.auth import TokenCache
    from cloudcore.app.gateway.ratelimits import RateLimiter
    from cloudcore.config import ApiSettings, OrchestratorSettings, Settings
    from cloudcore.events.local import LocalEventBus
    from cloudcore.events.relay import OutboxRelayActor
    from cloudcore.logging import configure_logging
    from cloudcore.runtime import ActorSystem
    from cloudcore.store.postgres import PostgresStore

    configure_logging("error")
    settings = msgspec.structs.replace(
        Settings(),
        api=ApiSettings(port=port, workers=workers, rate_limit=1e9, rate_burst=1_000_000_000),
        orchestrator=OrchestratorSettings(sweep_interval=3600.0),
    )
    store = await PostgresStore.connect(dsn, pool_size=max(4, 16 // workers))
    system = ActorSystem("bench-api")
    events = LocalEventBus()
    services = Services(store, events, settings.orchestrator)
    system.spawn(OutboxRelayActor, store, events, name="outbox-relay")
    # No datacenter runs here: deploys are written PENDING (see the module's docstring).
    orchestrator = await Orchestrator.start(system, services, datacenter="elsewhere")
    gateway = Gateway(
        settings=settings,
        store=store,
        events=events,
        system=system,
        orchestrator=orchestrator,
        tokens=TokenCache(store, settings.api.token_cache_seconds),
        limiter=RateLimiter(settings.api.rate_limit, settings.api.rate_burst),
    )
    runner = await start_api(gateway)
    await _until_terminated(ready, bound_port(runner))
    await runner.cleanup()
    await system.shutdown()
    await store.close()


def hello_process(ready: Connection) -> None:
    asyncio.run(_serve_hello(ready))


async def _serve_hello(ready: Connection) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world", "items": []})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await _until_terminated(ready, runner.addresses[0][1])
    await runner.cleanup()


async def _until_terminated(ready: Connection, port: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ready.send(port)
    await stop.wait()


class Server:
    """A server process; its port once it listens."""

    def __init__(self, target: Any, *args: Any) -> None:
        mine, theirs = SPAWN.Pipe()
        self.process = SPAWN.Process(target=target, args=(*args, theirs), daemon=True)
        self.process.start()
        if not mine.poll(60):
            self.process.kill()
            raise RuntimeError(f"{target.__name__} did not start")
        self.port: int = mine.recv()

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


# -- the load generator (a process of its own) -----------------------------------------------


def load_process(plan: dict[str, Any], out: Connection) -> None:
    out.send(asyncio.run(_load(plan)))


async def _load(plan: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    urls: list[str] = plan["urls"]
    method: str = plan["method"]
    body: bytes | None = plan.get("body")
    headers = plan.get("headers", {})
    expect: int = plan["expect"]
    connections: int = plan["connections"]
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    measuring = False
    stop = False

    async def worker(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal errors
        i = n * (len(urls) // connections + 7)
        while not stop:
            url = urls[i % len(urls)]
            i += 1
            began = time.perf_counter()
            async with session.request(method, url, data=body, headers=headers) as r:
                answer = await r.read()
                ok = r.status == expect
            if measuring:
                latencies.append(time.perf_counter() - began)
                errors += not ok
                if not ok and len(samples) < 3:
                    samples.append(f"{r.status} {answer[:300]!r}")

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [asyncio.create_task(worker(session, n)) for n in range(connections)]
        await asyncio.sleep(plan["warmup"])
        measuring = True
        started = time.perf_counter()
        await asyncio.sleep(plan["seconds"])
        measuring = False
        elapsed = time.perf_counter() - started
        stop = True
        await asyncio.gather(*workers)
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
        "requests": len(latencies),
        "unexpected_status": errors,
        "unexpected_samples": samples,
    }


def run_load(plan: dict[str, Any]) -> dict[str, Any]:
    mine, theirs = SPAWN.Pipe()
    process = SPAWN.Process(target=load_process, args=(plan, theirs), daemon=True)
    process.start()
    result: dict[str, Any] = mine.recv()
    process.join(10)
    return result


# -- the run ---------------------------------------------------------------------------------


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--workers", type=int, default=2, help="gateway processes on one port ([api] workers)"
    )
    args = parser.parse_args()

    from store import scratch_database

    from cloudcore.logging import configure_logging

    configure_logging("error")

    async def in_database() -> dict[str, Any]:
        async with scratch_database("cc_bench_api") as dsn:
            token, cursors = await seed(dsn, args.vms)
            return await asyncio.to_thread(measure, dsn, token, cursors, args)

    emit(asyncio.run(in_database()))


def measure(dsn: str, token: str, cursors: list[str], args: argparse.Namespace) -> dict[str, Any]:
    common = {"connections": args.connections, "seconds": args.seconds, "warmup": args.warmup}
    auth = {"Authorization": f"Bearer {token}"}
    hello_server = Server(hello_process)
    try:
        hello = run_load(
            {
                **common,
                "method": "GET",
                "urls": [f"http://127.0.0.1:{hello_server.port}/hello"],
                "expect": 200,
            }
        )
    finally:
        hello_server.stop()
    # The first worker takes a free port; the others bind it too (SO_REUSEPORT).
    gateways = [Server(gateway_process, dsn, 0, args.workers)]
    try:
        gateways += [
            Server(gateway_process, dsn, gateways[0].port, args.workers)
            for _ in range(args.workers - 1)
        ]
        base = f"http://127.0.0.1:{gateways[0].port}/api/v1"
        pages = [f"{base}/vms?limit={PAGE}" + (f"&cursor={c}" if c else "") for c in cursors]
        page = run_load({**common, "method": "GET", "urls": pages, "headers": auth, "expect": 200})
        body = json.dumps(CREATE).encode()
        create = run_load(
            {
                **common,
                "method": "POST",
                "urls": [f"{base}/vms"],
                "headers": {**auth, "Content-Type": "application/json"},
                "body": body,
                "expect": 202,
            }
        )
    finally:
        for gateway in gateways:
            gateway.stop()
    ratio = page["rps"] / hello["rps"] if hello["rps"] else 0.0
    return {
        "suite": "api",
        "vms": args.vms,
        "pages": len(cursors),
        "connections": args.connections,
        "api_workers": args.workers,
        "seconds": args.seconds,
        "store": "postgres",
        "get_vm_page_rps": _round(page["rps"]),
        "get_vm_page_p50_ms": _round(page["p50_ms"], 2),
        "get_vm_page_p99_ms": _round(page["p99_ms"], 2),
        "get_vm_page_unexpected_status": page["unexpected_status"],
        "get_vm_page_unexpected_samples": page["unexpected_samples"],
        "create_vm_rps": _round(create["rps"]),
        "create_vm_p99_ms": _round(create["p99_ms"], 2),
        "create_vm_unexpected_status": create["unexpected_status"],
        "create_vm_unexpected_samples": create["unexpected_samples"],
        "create_vm_notes": "no datacenter actor on the node: deploys are written PENDING",
        "aiohttp_hello_rps": _round(hello["rps"]),
        "aiohttp_hello_p99_ms": _round(hello["p99_ms"], 2),
        "get_vm_page_vs_hello": round(ratio, 3),
        "goal_get_vm_page_vs_hello": GOAL_RATIO,
        "goal_get_vm_page_p99_ms": GOAL_P99_MS,
        "goals_met": ratio >= GOAL_RATIO
        and page["p99_ms"] is not None
        and page["p99_ms"] <= GOAL_P99_MS,
    }


if __name__ == "__main__":
    main()
