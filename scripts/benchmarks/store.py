"""scripts/bench store: the store and the event bus against the machine's PostgreSQL and Redis.

Prints ONE JSON object; every figure is the median of --rounds rounds. PostgreSQL's own pgbench
(simple-update, as many clients as our writers, the same duration) runs interleaved with our
update rounds in the same invocation, as the physical reference of this machine. Scratch
databases and stream keys are created for the run and removed after it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg  # type: ignore[import-untyped]
import redis.asyncio as aioredis
from _common import emit

from cloudcore.events.base import EventBus
from cloudcore.events.local import LocalEventBus
from cloudcore.events.redis import RedisEventBus
from cloudcore.logging import configure_logging
from cloudcore.store._table import table_of
from cloudcore.store.base import Store
from cloudcore.store.postgres import PostgresStore
from cloudcore.store.records import VM, Datacenter, OutboxEvent, Tenant, VMSpec, VMState, new_id
from cloudcore.store.sqlite import SqliteStore

ADMIN_DSN = os.environ.get(
    "CLOUDCORE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLOUDCORE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
WRITERS = 16


@asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[str]:
    """A database of this run's own; its DSN. Dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(ADMIN_DSN)._replace(path="/" + name))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def seed(store: Store, vms: int) -> tuple[Tenant, list[VM]]:
    tenant = await store.create(Tenant(id=new_id(), name=f"bench-{secrets.token_hex(3)}"))
    dc = await store.create(Datacenter(id=new_id(), name=f"dc-{secrets.token_hex(3)}"))
    spec = VMSpec(cpus=2, memory_mib=2048)
    made = [
        await store.create(
            VM(id=new_id(), tenant_id=tenant.id, datacenter_id=dc.id, name=f"vm{i}", spec=spec)
        )
        for i in range(vms)
    ]
    return tenant, made


async def updates_per_s(
    store: Store, vms: list[VM], seconds: float, with_event: bool = False
) -> float:
    """Compare-and-set state updates by WRITERS concurrent writers, one VM each; ``with_event``:
    each writes a ``vm.state_changed`` event to the outbox in the same transaction (the
    outbox is emptied after the round, outside the timing)."""
    states = (VMState.RUNNING, VMState.STOPPED)
    done = 0
    stop = time.perf_counter() + seconds

    async def writer(vm: VM) -> None:
        nonlocal done
        version = (await store.get(VM, vm.id)).version
        subject = f"vm/{vm.id}"
        while time.perf_counter() < stop:
            state = states[version % 2]
            events = (
                [OutboxEvent(type="vm.state_changed", subject=subject, data={"state": state})]
                if with_event
                else []
            )
            vm = await store.update(VM, vm.id, expected_version=version, events=events, state=state)
            version = vm.version
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(vm) for vm in vms))
    rate = done / (time.perf_counter() - started)
    while rows := await store.read_outbox(1000):
        await store.remove_from_outbox([r.seq for r in rows])
    return rate


def _pgbench(dsn: str, *options: str) -> str:
    parts = urlsplit(dsn)
    argv = [
        shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench",
        "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432),
        "-U", parts.username or "postgres", *options, parts.path.lstrip("/"),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def pgbench_init(dsn: str) -> None:
    _pgbench(dsn, "-i", "-q", "-s", "1")


def pgbench_tps(dsn: str, seconds: float) -> float:
    """pgbench's simple-update transactions per second, WRITERS clients, prepared statements."""
    out = _pgbench(dsn, "-b", "simple-update", "-M", "prepared", "-c", str(WRITERS), "-j", "2",
                   "-T", str(round(seconds)))  # fmt: skip
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if match is None:
        raise RuntimeError(f"cannot read pgbench's tps from: {out}")
    return float(match[1])


async def bulk_vms(dsn: str, count: int, tenants: int) -> list[str]:
    """``count`` VMs over ``tenants`` tenants, loaded with COPY; the tenant ids."""
    store = await PostgresStore.connect(dsn, pool_size=2)
    await store.upgrade()
    dc = await store.create(Datacenter(id=new_id(), name="bulk"))
    ids = [(await store.create(Tenant(id=new_id(), name=f"t{i}"))).id for i in range(tenants)]
    await store.close()
    table = table_of(VM)
    now = datetime.now(UTC)
    spec = VMSpec(cpus=1, memory_mib=1024)
    states = list(VMState)
    rows = [
        table.encode(
            VM(id=new_id(), tenant_id=ids[i % tenants], datacenter_id=dc.id, name=f"vm{i}",
               spec=spec, state=states[i % len(states)], version=1, created_at=now,
               updated_at=now)
        )
        for i in range(count)
    ]  # fmt: skip
    conn = await asyncpg.connect(dsn)
    await conn.copy_records_to_table("vms", records=rows, columns=list(table.columns))
    await conn.execute("ANALYZE vms")
    await conn.close()
    return ids


async def list_page_p50_ms(store: Store, tenants: list[str], pages: int) -> float:
    """Median latency of a page of 100 VMs of one tenant, walking its listing by cursor."""
    latencies: list[float] = []
    while len(latencies) < pages:
        cursor = None
        where = {"tenant_id": random.choice(tenants)}
        while True:
            started = time.perf_counter()
            page = await store.list(VM, where=where, after=cursor, limit=100)
            latencies.append((time.perf_counter() - started) * 1000)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    return statistics.median(latencies)


async def events_per_s(bus: EventBus, count: int, publishers: int = 64) -> float:
    """Events published by ``publishers`` concurrent tasks and consumed by one subscriber."""
    each = count // publishers
    count = each * publishers
    start = await bus.last_position()
    received = 0
    all_in = asyncio.Event()

    async def consume() -> None:
        nonlocal received
        async for _ in bus.subscribe(after=start):
            received += 1
            if received == count:
                all_in.set()
                return

    async def publish(n: int) -> None:
        for i in range(n):
            await bus.publish("vm.state_changed", f"vm/{i}", tenant="t", data={"state": "ON"})

    consumer = asyncio.create_task(consume())
    started = time.perf_counter()
    await asyncio.gather(*(publish(each) for _ in range(publishers)))
    await asyncio.wait_for(all_in.wait(), timeout=120)
    elapsed = time.perf_counter() - started
    await consumer
    return count / elapsed


async def main(rounds: int, seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {"rounds": rounds, "seconds_per_round": seconds, "writers": WRITERS}
    pg_updates: list[float] = []
    pg_single: list[float] = []
    pgbench: list[float] = []
    sqlite_updates: list[float] = []
    pg_evented: list[float] = []
    sqlite_evented: list[float] = []
    async with scratch_database("cc_bench") as dsn, scratch_database("cc_pgbench") as bench_dsn:
        await asyncio.to_thread(pgbench_init, bench_dsn)
        pg = await PostgresStore.connect(dsn, pool_size=WRITERS)
        await pg.upgrade()
        _, vms = await seed(pg, WRITERS)
        single = await PostgresStore.connect(dsn, pool_size=WRITERS, group_commit=False)
        with tempfile.TemporaryDirectory() as tmp:
            lite = await SqliteStore.connect(Path(tmp) / "bench.db")
            await lite.upgrade()
            _, lite_vms = await seed(lite, WRITERS)
            for _ in range(rounds):  # interleaved, so a noisy moment hits both alike
                pg_updates.append(await updates_per_s(pg, vms, seconds))
                pg_single.append(await updates_per_s(single, vms, seconds))
                pgbench.append(await asyncio.to_thread(pgbench_tps, bench_dsn, seconds))
                sqlite_updates.append(await updates_per_s(lite, lite_vms, seconds))
                pg_evented.append(await updates_per_s(pg, vms, seconds, with_event=True))
                sqlite_evented.append(await updates_per_s(lite, lite_vms, seconds, True))
            await lite.close()
        await pg.close()
        await single.close()
    result["vm_update_per_s_postgres"] = round(statistics.median(pg_updates))
    # The same updates, each its own statement and commit (no group commit), for reference.
    result["vm_update_per_s_postgres_one_commit_each"] = round(statistics.median(pg_single))
    result["vm_update_per_s_sqlite"] = round(statistics.median(sqlite_updates))
    # The same updates, each with one event written to the outbox in its transaction.
    result["vm_update_with_event_per_s_postgres"] = round(statistics.median(pg_evented))
    result["vm_update_with_event_per_s_sqlite"] = round(statistics.median(sqlite_evented))
    result["pgbench_tps"] = round(statistics.median(pgbench))
    result["vm_update_to_pgbench_ratio"] = round(
        result["vm_update_per_s_postgres"] / result["pgbench_tps"], 2
    )

    async with scratch_database("cc_bench_list") as dsn:
        tenants = await bulk_vms(dsn, 100_000, tenants=100)
        pg = await PostgresStore.connect(dsn, pool_size=2)
        await list_page_p50_ms(pg, tenants, 100)  # warm the statement cache and buffers
        p50 = [await list_page_p50_ms(pg, tenants, 300) for _ in range(rounds)]
        await pg.close()
    result["vm_list_page_p50_ms_postgres"] = round(statistics.median(p50), 3)

    key = f"cc_bench:{secrets.token_hex(5)}:events"
    count = 50_000
    redis_rates, local_rates = [], []
    for _ in range(rounds):
        redis_bus = await RedisEventBus.connect(REDIS_URL, stream=key, retention=count * 2)
        redis_rates.append(await events_per_s(redis_bus, count))
        await redis_bus.close()
        local_rates.append(await events_per_s(LocalEventBus(retention=count * 2), count))
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.delete(key)
    await client.aclose()
    result["event_publish_consume_per_s_redis"] = round(statistics.median(redis_rates))
    result["event_publish_consume_per_s_local"] = round(statistics.median(local_rates))
    result["goals"] = {
        "vm_update_per_s_postgres": ">= 5000 and >= 0.5 x pgbench_tps",
        "vm_list_page_p50_ms_postgres": "<= 5",
        "event_publish_consume_per_s_redis": ">= 20000",
    }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per update round")
    args = parser.parse_args()
    configure_logging("error")
    emit(asyncio.run(main(max(3, args.rounds), args.seconds)))
