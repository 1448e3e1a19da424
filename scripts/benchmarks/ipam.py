"""scripts/bench ipam: address allocation on both stores, against a plain INSERT loop in the
same run, and how long a new NIC takes to reach dnsmasq.

Prints ONE JSON object:

- ``allocations_per_s_postgres`` / ``_sqlite``: NICs allocated (an address picked and held, a
  MAC made and held unique, the ``nic.added`` event written, one transaction each) by
  ``--clients`` concurrent clients, each its own call of ``store.allocate_ip``.
- ``raw_insert_per_s_postgres`` / ``_sqlite``: plain single-row INSERTs, one transaction each,
  by as many clients over a pool of the same size (PostgreSQL: asyncpg; SQLite: the stdlib
  driver in a thread, one writer, WAL as the store uses), in the same run.
- ``duplicate_addresses``: addresses held twice at the end (the primary key forbids it; counted
  from the replies of the callers too).
- ``dhcp_update_p99_ms``: from a NIC's allocation to dnsmasq having re-read the hosts file
  with its entry (the ``read <hosts>`` line in dnsmasq's log), one allocation at a time through
  the outbox, the event bus, the node's DHCP servers and a real dnsmasq on a bridge in a network
  namespace made for the run (needs root and dnsmasq-base; else null, said in ``notes``).

Scratch databases, namespaces and processes are the run's own and removed after it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg  # type: ignore[import-untyped]
from _common import emit
from store import scratch_database

from actors.dhcp import DhcpServers, GetDhcpServers
from actors.network import DhcpOptions, DhcpStatus
from cloudcore.config import RuntimeSettings
from cloudcore.events.local import LocalEventBus
from cloudcore.events.relay import OutboxRelayActor
from cloudcore.logging import configure_logging
from cloudcore.runtime import ActorSystem
from cloudcore.store.base import Store
from cloudcore.store.postgres import PostgresStore
from cloudcore.store.records import Datacenter, IpAllocation, Network, OutboxEvent, new_id
from cloudcore.store.sqlite import SqliteStore

POOL = 16
GOAL_RATIO = 0.3


async def _network(store: Store, cidr: str, bridge: str = "") -> Network:
    dc = await store.create(Datacenter(id=new_id("dc-"), name=f"dc-{secrets.token_hex(3)}"))
    return await store.create_network(
        Network(
            id=new_id("net-"),
            datacenter_id=dc.id,
            name="bench",
            cidr=cidr,
            bridge=bridge,
            quarantine_s=0,
        )
    )


async def _clients(count: int, clients: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Run ``count`` calls of ``one`` by ``clients`` concurrent workers; calls per second."""
    queue = iter(range(count))

    async def worker() -> None:
        for n in queue:
            await one(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return count / (time.perf_counter() - started)


async def allocations(store: Store, count: int, clients: int) -> tuple[float, int]:
    """NICs allocated per second, and the addresses given twice among the replies and in the
    store at the end."""
    network = await _network(store, "10.128.0.0/14")  # room for every allocation
    given: list[IpAllocation] = []

    async def one(n: int) -> None:
        added = OutboxEvent(type="nic.added", subject=f"vm/bench-{n}", data={})
        given.append(
            await store.allocate_ip(
                network.id, vm_id=f"bench-{n}", mac_prefix="02:cc", events=[added]
            )
        )

    rate = await _clients(count, clients, one)
    held = await store.list_ips(network.id)
    twice = (len(given) - len({g.address for g in given})) + (
        len(held) - len({h.address for h in held})
    )
    return rate, twice


async def raw_postgres(dsn: str, count: int, clients: int) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=POOL, max_size=POOL)
    try:
        await pool.execute("CREATE TABLE bench_rows (id TEXT PRIMARY KEY, value TEXT NOT NULL)")

        async def one(n: int) -> None:
            await pool.execute("INSERT INTO bench_rows VALUES ($1, $2)", f"row-{n}", "x")

        return await _clients(count, clients, one)
    finally:
        await pool.close()


async def raw_sqlite(path: Path, count: int, clients: int) -> float:
    """Single-row INSERTs, each committed, through one connection in a thread (SQLite has one
    writer; the clients queue for it, as they do for the store's)."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE bench_rows (id TEXT PRIMARY KEY, value TEXT NOT NULL)")
    lock = asyncio.Lock()

    def insert(n: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO bench_rows VALUES (?, ?)", (f"row-{n}", "x"))
        conn.execute("COMMIT")

    async def one(n: int) -> None:
        async with lock:
            await asyncio.to_thread(insert, n)

    try:
        return await _clients(count, clients, one)
    finally:
        conn.close()


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


async def dhcp_update_ms(samples: int, workdir: Path) -> list[float] | str:
    """Per allocation, ms from the call to dnsmasq's re-read of the hosts file with it."""
    if os.geteuid() != 0 or shutil.which("dnsmasq") is None or shutil.which("ip") is None:
        return "dhcp_update_p99_ms needs root, ip and dnsmasq-base: not measured"
    netns = f"ccbench-{secrets.token_hex(3)}"
    _ip("netns", "add", netns)
    try:
        for args in (
            ("link", "set", "lo", "up"),
            ("link", "add", "ccbr0", "type", "bridge"),
            ("addr", "add", "10.97.0.1/16", "dev", "ccbr0"),
            ("link", "set", "ccbr0", "up"),
        ):
            _ip("-n", netns, *args)
        return await _dhcp_samples(samples, workdir, netns)
    finally:
        _ip("netns", "del", netns, check=False)


async def _dhcp_samples(samples: int, workdir: Path, netns: str) -> list[float]:
    store = await SqliteStore.connect(workdir / "dhcp.db")
    await store.upgrade()
    bus = LocalEventBus()
    system = ActorSystem("bench", RuntimeSettings(ask_timeout=30.0, shutdown_timeout=10.0))
    try:
        system.spawn(OutboxRelayActor, store, bus, name="outbox-relay")
        network = await _network(store, "10.97.0.0/16", bridge="ccbr0")
        options = DhcpOptions(
            state_dir=str(workdir / "dhcp"),
            wrapper=("ip", "netns", "exec", netns),
            user="root",
            resync_interval=3600,
        )
        dhcp = system.spawn(DhcpServers, store, bus, options, network.datacenter_id, name="dhcp")
        log = workdir / "dhcp" / network.id / "log"
        while True:  # dnsmasq up, with its log open
            statuses: dict[str, DhcpStatus] = await dhcp.ask(GetDhcpServers())
            if network.id in statuses and statuses[network.id].pid is not None and log.exists():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # its start-up reads are logged
        hosts = workdir / "dhcp" / network.id / "hosts"
        times: list[float] = []
        for n in range(samples):
            reads = _reads(log)
            started = time.perf_counter()
            added = OutboxEvent(  # as POST /vms/{id}/nics writes it: the DHCP servers follow it
                type="nic.added", subject=f"vm/vm-{n}", data={"network_id": network.id}
            )
            nic = await store.allocate_ip(
                network.id, vm_id=f"vm-{n}", mac_prefix="02:cd", events=[added]
            )
            entry = f"{nic.mac},{nic.address}"
            for _ in range(60_000):  # polled every ms, for a minute at most
                if entry in hosts.read_text() and _reads(log) > reads:
                    break
                await asyncio.sleep(0.001)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        await system.shutdown()
        await bus.close()
        await store.close()


def _reads(log: Path) -> int:
    return log.read_text().count("read ")


def _p99(values: list[float]) -> float:
    return round(statistics.quantiles(values, n=100)[98], 2) if len(values) > 1 else values[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--allocations", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--dhcp-samples", type=int, default=200)
    args = parser.parse_args()
    configure_logging("ERROR", "json")
    result: dict[str, Any] = {"clients": args.clients, "allocations": args.allocations}
    with tempfile.TemporaryDirectory(prefix="cc-bench-ipam-") as tmp:
        work = Path(tmp)
        async with scratch_database("cc_bench_ipam") as dsn:
            pg = await PostgresStore.connect(dsn, pool_size=POOL)
            try:
                await pg.upgrade()
                pg_rate, pg_twice = await allocations(pg, args.allocations, args.clients)
            finally:
                await pg.close()
            raw_pg = await raw_postgres(dsn, args.allocations, args.clients)
        lite = await SqliteStore.connect(work / "bench.db")
        try:
            await lite.upgrade()
            lite_rate, lite_twice = await allocations(lite, args.allocations, args.clients)
        finally:
            await lite.close()
        raw_lite = await raw_sqlite(work / "raw.db", args.allocations, args.clients)
        dhcp = await dhcp_update_ms(args.dhcp_samples, work)
    ratio_pg, ratio_lite = pg_rate / raw_pg, lite_rate / raw_lite
    result |= {
        "allocations_per_s_postgres": round(pg_rate, 1),
        "raw_insert_per_s_postgres": round(raw_pg, 1),
        "ratio_postgres": round(ratio_pg, 3),
        "ratio_postgres_goal": f">= {GOAL_RATIO}",
        "ratio_postgres_met": ratio_pg >= GOAL_RATIO,
        "allocations_per_s_sqlite": round(lite_rate, 1),
        "raw_insert_per_s_sqlite": round(raw_lite, 1),
        "ratio_sqlite": round(ratio_lite, 3),
        "duplicate_addresses": pg_twice + lite_twice,
        "duplicate_addresses_goal": "== 0",
        "duplicate_addresses_met": pg_twice + lite_twice == 0,
    }
    if isinstance(dhcp, str):
        result |= {"dhcp_update_p99_ms": None, "notes": dhcp}
    else:
        p99 = _p99(dhcp)
        result |= {
            "dhcp_update_p50_ms": round(statistics.median(dhcp), 2),
            "dhcp_update_p99_ms": p99,
            "dhcp_update_p99_ms_goal": "<= 100",
            "dhcp_update_p99_ms_met": p99 <= 100,
            "dhcp_samples": len(dhcp),
        }
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
