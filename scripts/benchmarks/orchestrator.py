"""scripts/bench orchestrator: VMs deployed end to end through the task path.

Prints ONE JSON object. A run deploys --vms VMs across --hosts simulated hosts (libvirt's test
driver, one in-memory hypervisor per host), each deploy the whole journaled path the product runs:
a VM and its task written to the store, a deploy runner actor, the scheduler's placement claimed in
the store, the host's VM actor defining and starting the VM on its hypervisor, every step and state
change persisted. It runs once on SQLite and once on PostgreSQL (a scratch database). The
scheduler's own decision time is measured alongside at 1,000 and 10,000 hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit, rss_bytes
from scheduler import measure_placements
from store import scratch_database

from actors.orchestrator import Orchestrator
from actors.registration import host_record
from actors.services import Services
from cloudcore.config import OrchestratorSettings, Settings
from cloudcore.events.local import LocalEventBus
from cloudcore.events.relay import OutboxRelayActor
from cloudcore.logging import configure_logging
from cloudcore.runtime import ActorSystem
from cloudcore.store.base import Store
from cloudcore.store.postgres import PostgresStore
from cloudcore.store.records import Datacenter, Host, HostHealth, Task, TaskState, Tenant, VMSpec
from cloudcore.store.sqlite import SqliteStore
from hypervisor_drivers.libvirt import write_simulated_host

#: Deploys submitted at once; the rest wait for a slot (a client's in-flight window).
WINDOW = 512
#: How long one deploy may take before the run counts it as stuck (and goes on without it).
DEPLOY_BOUND = 600.0


async def _seed(store: Store, hosts: int, folder: Path) -> None:
    await store.create(Tenant(id="bench", name="bench"))
    await store.create(Datacenter(id="dc1", name="dc1"))
    settings = Settings()
    for n in range(hosts):
        uri = write_simulated_host(folder / f"h{n}.xml", cpus=64, memory_kib=256 * 1024 * 1024)
        await store.create(
            host_record(
                settings,
                host_id=f"h{n:05d}",
                datacenter_id="dc1",
                hypervisor="libvirt",
                uri=uri,
                physical_cpus=64,
                physical_memory_mib=256 * 1024,
            )
        )


async def _healthy(store: Store, hosts: int, timeout: float = 300.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            page = await store.list(Host, where={"health": HostHealth.HEALTHY}, limit=1000)
            count = len(page.items)
            while page.next_cursor and count < hosts:
                page = await store.list(
                    Host, where={"health": HostHealth.HEALTHY}, after=page.next_cursor, limit=1000
                )
                count += len(page.items)
            if count >= hosts:
                return
            await asyncio.sleep(0.2)


async def deploy_run(store: Store, hosts: int, vms: int) -> dict[str, float]:
    """Deploy ``vms`` VMs on ``hosts`` fresh simulated hosts; throughput and latencies."""
    with tempfile.TemporaryDirectory() as folder:
        await store.upgrade()
        await _seed(store, hosts, Path(folder))
        settings = OrchestratorSettings(sweep_interval=3600.0)
        system = ActorSystem("bench")
        try:
            services = Services(store, LocalEventBus(), settings)
            system.spawn(OutboxRelayActor, store, services.events, name="outbox-relay")
            orchestrator = await Orchestrator.start(system, services)
            await _healthy(store, hosts)
            slots = asyncio.Semaphore(WINDOW)
            latencies: list[float] = []
            failed = stuck = 0

            async def one(n: int) -> None:
                nonlocal failed, stuck
                async with slots:
                    began = time.perf_counter()
                    task = await orchestrator.deploy(
                        tenant_id="bench",
                        datacenter_id="dc1",
                        name=f"vm{n}",
                        spec=VMSpec(cpus=1, memory_mib=512),
                    )
                    try:
                        done = await orchestrator.wait(task.id, timeout=DEPLOY_BOUND)
                    except TimeoutError:
                        stuck += 1
                        return
                    latencies.append(time.perf_counter() - began)
                    failed += done.state is not TaskState.SUCCEEDED

            start = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(vms)))
            elapsed = time.perf_counter() - start
            running = await _count(store, Task, {"state": TaskState.RUNNING})
        finally:
            await system.shutdown(timeout=60)
    latencies.sort()
    return {
        "per_s": vms / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "failed": failed + stuck,
        "stuck": stuck,
        "left_running": running,
    }


async def _count(store: Store, kind: type[Task], where: dict[str, object]) -> int:
    count, after = 0, None
    while True:
        page = await store.list(kind, where=where, after=after, limit=1000)
        count += len(page.items)
        if (after := page.next_cursor) is None:
            return count


async def on_sqlite(hosts: int, vms: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = await SqliteStore.connect(Path(folder) / "bench.db")
        try:
            return await deploy_run(store, hosts, vms)
        finally:
            await store.close()


async def on_postgres(hosts: int, vms: int) -> dict[str, float]:
    async with scratch_database("cc_bench_orch") as dsn:
        store = await PostgresStore.connect(dsn, pool_size=16)
        try:
            return await deploy_run(store, hosts, vms)
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the scheduler figures")
    args = parser.parse_args()
    configure_logging("error")

    sqlite = asyncio.run(on_sqlite(args.hosts, args.vms))
    postgres = asyncio.run(on_postgres(args.hosts, args.vms))
    sched_1k = measure_placements(1_000, rounds=args.rounds)
    sched_10k = measure_placements(10_000, rounds=args.rounds)
    emit(
        {
            "suite": "orchestrator",
            "hosts": args.hosts,
            "vms": args.vms,
            "vms_deployed_per_s_sqlite": round(sqlite["per_s"], 1),
            "vms_deployed_per_s_postgres": round(postgres["per_s"], 1),
            "deploy_p50_ms": round(postgres["p50_ms"], 1),
            "deploy_p99_ms": round(postgres["p99_ms"], 1),
            "deploy_p99_ms_sqlite": round(sqlite["p99_ms"], 1),
            "failed_deploys": int(sqlite["failed"] + postgres["failed"]),
            "stuck_deploys": int(sqlite["stuck"] + postgres["stuck"]),
            "tasks_left_running": int(sqlite["left_running"] + postgres["left_running"]),
            "scheduler_p99_ms_1k_hosts": round(sched_1k["p99_ms"], 4),
            "scheduler_p99_ms_10k_hosts": round(sched_10k["p99_ms"], 4),
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "goals": {
                "vms_deployed_per_s_postgres >= 200": postgres["per_s"] >= 200,
                "scheduler_p99_ms_10k_hosts <= 1": sched_10k["p99_ms"] <= 1,
                "failed_deploys == 0 and none left RUNNING": sqlite["failed"]
                + postgres["failed"]
                + sqlite["left_running"]
                + postgres["left_running"]
                == 0,
            },
        }
    )


if __name__ == "__main__":
    main()
