"""cluster-e2e: the cost of distribution, end to end through the API.

The same load runs on one monolithic node and on the three-node cluster of ``scripts/cluster``
(a server node, and one remote-services node for each of dc1 and dc2), each on a PostgreSQL, a
Redis and (the cluster) a RabbitMQ of this benchmark's own, so the CPU counted is this load's
alone (this machine's shared servers serve other work at the same time):

- ``cpu_ms_per_deploy_*``: CPU time (user + system, from /proc) of every process involved —
  the cloudcore nodes, PostgreSQL (postmaster and backends), Redis, RabbitMQ — per VM deployed
  through the API, on simulated hosts (libvirt's test driver), ``--deploys`` of them,
  ``--concurrency`` at a time, each followed to its end.
- ``routed_op_p50_ms``: a reboot through the server node of a VM on a remote datacenter node,
  until the client hears its task has ended (``task.finished`` on the API's event stream);
  ``local_op_p50_ms`` the same on the monolithic node, the two measured in alternation with
  both setups up (the load of a shared machine changes by the minute: measured one after the
  other, the two medians differed by -177 to +146 ms from run to run). Clients follow tasks by
  that stream, not by polling, so the measuring adds no load to the node doing the work.

Prints one JSON object with each figure and its goal beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from _common import emit  # noqa: E402

from cloudcore.app.client import SseDecoder  # noqa: E402
from tests.integration.cluster.broker import PrivateBroker  # noqa: E402
from tests.integration.profiles.api import Api  # noqa: E402
from tests.integration.profiles.launcher import Cluster  # noqa: E402
from tests.integration.state.servers import PrivatePostgres, PrivateRedis  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / TICK


def cpu_seconds(roots: list[int]) -> float:
    """CPU time of ``roots`` and every live descendant (exited ones count in their parent)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def _postmaster(pg: PrivatePostgres) -> int:
    return int((pg.root / "data" / "postmaster.pid").read_text().split()[0])


class _Finished:
    """Follows ``task.finished`` events on the API's event stream (SSE): a client learns a
    task's end when it happens, without polling the node that does the work."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.ready = asyncio.Event()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        decoder = SseDecoder()
        url = self.api.base + "/events/stream?types=task.finished"
        async with self.api.session.get(url, timeout=None) as reply:
            self.ready.set()
            async for raw in reply.content:
                event = decoder.feed(raw.decode())
                if event is None:
                    continue
                data = event.json()
                future = self.waiting.pop(str(data.get("data", {}).get("task_id", "")), None)
                if future is not None and not future.done():
                    future.set_result(str(data["data"]["state"]))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


FINAL = ("SUCCEEDED", "FAILED", "COMPENSATED", "CANCELLED")


async def _ended(api: Api, finished: _Finished, task_id: str) -> str:
    """The task's final state: registered with the stream first, then read once (it may have
    ended before)."""
    ended = finished.waiting[task_id] = asyncio.get_running_loop().create_future()
    state = str((await api.call("GET", f"/tasks/{task_id}")).body["state"])
    if state in FINAL:
        finished.waiting.pop(task_id, None)
        return state
    return await asyncio.wait_for(ended, 120)


async def _deploys(api: Api, finished: _Finished, n: int, concurrency: int, prefix: str) -> None:
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            answer = await api.deploy(("dc1", "dc2")[i % 2], f"{prefix}-{i}")
            if answer.status != 202:
                raise RuntimeError(f"deploy refused: {answer.status} {answer.body}")
            state = await _ended(api, finished, answer.body["id"])
            if state != "SUCCEEDED":
                raise RuntimeError(f"deploy {answer.body['id']} ended {state}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _latency_vm(api: Api, finished: _Finished) -> str:
    """A running dc1 VM to reboot."""
    answer = await api.deploy("dc1", "latency")
    await _ended(api, finished, answer.body["id"])
    return str((await api.call("GET", f"/tasks/{answer.body['id']}")).body["subject"][3:])


async def _reboot_ms(api: Api, finished: _Finished, vm_id: str) -> float:
    """A reboot, from the request until the client hears that its task has ended, in ms."""
    started = time.perf_counter()
    op = await api.operate(vm_id, "reboot")
    if op.status != 202:
        raise RuntimeError(f"reboot refused: {op.status} {op.body}")
    state = await _ended(api, finished, op.body["id"])
    if state != "SUCCEEDED":
        raise RuntimeError(f"reboot ended {state}")
    return (time.perf_counter() - started) * 1000


class _Setup:
    """One setup, running: its nodes, its API client and its event stream."""

    def __init__(
        self, cluster: Cluster, api: Api, finished: _Finished, groups: dict[str, list[int]]
    ):
        self.cluster, self.api, self.finished, self.groups = cluster, api, finished, groups


@contextlib.asynccontextmanager
async def _running(
    kind: str, args: argparse.Namespace, pg: PrivatePostgres, redis: PrivateRedis, broker: Any
) -> AsyncIterator[_Setup]:
    """The monolithic node, or the three-node cluster, warmed up, until the block ends."""
    with tempfile.TemporaryDirectory(prefix=f"cc-e2e-{kind}-") as tmp:
        cluster = Cluster(
            Path(tmp),
            ("dc1", "dc2"),
            hosts=args.hosts,
            lease=10.0,
            admin_dsn=pg.dsn,
            amqp_url=broker.url if broker is not None else "amqp://127.0.0.1:1/",
            redis_url=redis.url,
            fast=False,  # the default heartbeat and watchdog timing, as a user runs it
        )
        await cluster.create()
        api = Api(cluster.api)
        finished: _Finished | None = None
        try:
            if kind == "monolithic":
                await cluster.start("monolithic")
            else:
                await cluster.start_all()
                for dc in ("dc1", "dc2"):
                    await cluster.wait_for_log(f"node-{dc}", "lease.acquired", datacenter=dc)
            finished = _Finished(api)
            await asyncio.wait_for(finished.ready.wait(), 30)
            await _deploys(api, finished, 10, 5, "warm")  # connections, pools, code paths
            groups = {
                **{node: [pid] for node, pid in cluster.pid_of().items()},
                "postgres": [_postmaster(pg)],
                "redis": [redis.pid],
            }
            if broker is not None:
                groups["rabbitmq"] = [broker.beam_pid]
            yield _Setup(cluster, api, finished, groups)
        finally:
            if finished is not None:
                await finished.close()
            await api.close()
            await cluster.remove()


async def _cpu(setup: _Setup, args: argparse.Namespace) -> dict[str, Any]:
    """CPU of every process of the setup per deploy, under ``args.deploys`` deploys."""
    groups = setup.groups
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    started = time.perf_counter()
    await _deploys(setup.api, setup.finished, args.deploys, args.concurrency, "load")
    wall = time.perf_counter() - started
    spent = {name: cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    by_process = {name: round(sec * 1000 / args.deploys, 1) for name, sec in spent.items()}
    return {"cpu_ms_per_deploy": sum(spent.values()) * 1000 / args.deploys,
            "deploys_per_s": args.deploys / wall, "by_process": by_process}  # fmt: skip


async def _latencies(mono: _Setup, dist: _Setup, rounds: int) -> tuple[float, float]:
    """p50 of a local and of a routed reboot, measured in alternation (local, routed, local,
    ...) with both setups up, so that the machine's load, which changes by the minute on a
    shared machine, weighs on both alike."""
    local_vm = await _latency_vm(mono.api, mono.finished)
    routed_vm = await _latency_vm(dist.api, dist.finished)
    local, routed = [], []
    for _ in range(rounds):
        local.append(await _reboot_ms(mono.api, mono.finished, local_vm))
        routed.append(await _reboot_ms(dist.api, dist.finished, routed_vm))
    return statistics.median(local), statistics.median(routed)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Each setup on a PostgreSQL and a Redis of its own (so the CPU counted is its load's);
    the monolithic one stays up (idle, not counted) while the cluster's load runs, then the
    latencies are measured on both."""
    servers = [PrivatePostgres(), PrivateRedis(persistent=False), PrivatePostgres(),
               PrivateRedis(persistent=False), PrivateBroker()]  # fmt: skip
    pg_m, redis_m, pg_c, redis_c, broker = servers
    try:
        for server in servers:
            server.start()
        async with contextlib.AsyncExitStack() as stack:
            mono_setup = await stack.enter_async_context(
                _running("monolithic", args, pg_m, redis_m, None)
            )
            mono = await _cpu(mono_setup, args)
            dist_setup = await stack.enter_async_context(
                _running("cluster", args, pg_c, redis_c, broker)
            )
            dist = await _cpu(dist_setup, args)
            local_ms, routed_ms = await _latencies(mono_setup, dist_setup, args.rounds)
    finally:
        for server in servers:
            server.remove()
    ratio = dist["cpu_ms_per_deploy"] / mono["cpu_ms_per_deploy"]
    extra = routed_ms - local_ms
    return {
        "suite": "cluster-e2e",
        "deploys": args.deploys,
        "concurrency": args.concurrency,
        "cpu_ms_per_deploy_monolithic": round(mono["cpu_ms_per_deploy"], 1),
        "cpu_ms_per_deploy_cluster": round(dist["cpu_ms_per_deploy"], 1),
        "cpu_ms_per_deploy_by_process_monolithic": mono["by_process"],
        "cpu_ms_per_deploy_by_process_cluster": dist["by_process"],
        "cpu_cluster_vs_monolithic": round(ratio, 2),
        "cpu_cluster_vs_monolithic_goal": "<= 1.5",
        "cpu_goal_met": ratio <= 1.5,
        "deploys_per_s_monolithic": round(mono["deploys_per_s"], 1),
        "deploys_per_s_cluster": round(dist["deploys_per_s"], 1),
        "op_rounds": args.rounds,
        "local_op_p50_ms": round(local_ms, 1),
        "routed_op_p50_ms": round(routed_ms, 1),
        "routed_minus_local_ms": round(extra, 1),
        "routed_op_goal": "routed_op_p50_ms <= local_op_p50_ms + 5",
        "routed_goal_met": extra <= 5,
    }


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deploys", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--hosts", type=int, default=4, help="simulated hosts per datacenter")
    parser.add_argument("--rounds", type=int, default=40, help="operations timed per setup")
    return parser.parse_args()


if __name__ == "__main__":
    from cloudcore.logging import configure_logging

    configure_logging("warning")
    emit(asyncio.run(main(_parse())))
