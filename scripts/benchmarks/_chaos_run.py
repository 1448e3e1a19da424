"""The chaos benchmark's scenario (see chaos.py for what it measures): set-up, load, faults,
the watch after the last fault, the final reads, and the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from _chaos_client import Api, Subscriber, Unavailable, deploy
from _chaos_services import NodeProcess, PrivatePostgres, PrivateRedis, free_port
from _chaos_tally import Request, VMSeen, accepted_tasks, events_missing, unfinished

__all__ = ["GOAL_RECOVERY_S", "Run", "parse_args"]

TENANT = "demo"
ADMIN_TOKEN = "chaos-bench-admin-token-" + "x" * 16
GOAL_RECOVERY_S = 30.0
#: Seconds after the end of the last fault at which stuck tasks are counted.
STUCK_AFTER = 60.0
#: Seconds the subscriber is given, once every task is terminal, to see the last events.
EVENT_GRACE = 15.0

_PRESETS = {
    "full": {"deploys": 1000, "window": 64, "kills": 3, "outage_s": 10.0, "deadline": 1500.0},
    "quick": {"deploys": 100, "window": 16, "kills": 1, "outage_s": 3.0, "deadline": 400.0},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench chaos", description=__doc__)
    p.add_argument("--quick", action="store_true", help="100 deploys, 1 kill, 3 s outages")
    p.add_argument("--deploys", type=int)
    p.add_argument("--window", type=int, help="deploys in flight at most")
    p.add_argument("--kills", type=int, help="kill -9 of the node")
    p.add_argument("--outage-s", type=float, help="seconds of the PostgreSQL and Redis outages")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--hosts", type=int, default=8, help="simulated hosts (64 CPUs, 256 GiB)")
    p.add_argument("--settle-s", type=float, default=120.0, help="watch cap after the load")
    p.add_argument("--deadline", type=float, help="hard limit of the whole run, seconds")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the node/PostgreSQL/Redis logs here")
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="the node's log level (info: leases taken, deploys resumed, for --keep-logs)",
    )
    args = p.parse_args(argv)
    for key, value in _PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.settle_s = max(args.settle_s, STUCK_AFTER)
    return args


class Run:
    """One run: what it started, what it saw, and its report."""

    def __init__(self, args: argparse.Namespace, on_cleanup: Callable[[Callable[[], None]], None]):
        self.args = args
        self._on_cleanup = on_cleanup
        self.rng = random.Random(args.seed)
        self.requests = [
            Request(key=f"chaos-{args.seed}-{i:05d}", name=f"chaos-{args.seed}-{i:05d}")
            for i in range(args.deploys)
        ]
        self.started = 0
        self.answered = 0
        self.error: str | None = None
        self.t0 = time.monotonic()
        self.faults: list[dict[str, Any]] = []
        self.unplanned_exits: list[dict[str, Any]] = []
        self.last_fault_end: float | None = None
        self.load_end: float | None = None
        self.states: dict[str, str] = {}
        self.recovery_s: float | None = None
        self.recovery_capped = False
        self.stuck: int | None = None
        self.vms: list[VMSeen] | None = None
        self.used: dict[str, int] | None = None
        self.in_history: set[str] | None = None
        self.subscriber: Subscriber | None = None
        self.node: NodeProcess | None = None
        self.log_errors: Counter[str] = Counter()
        self._node_lock = asyncio.Lock()
        self._progress = asyncio.Condition()

    def _t(self, at: float | None = None) -> float:
        return round((time.monotonic() if at is None else at) - self.t0, 1)

    # -- the run ---------------------------------------------------------------------------

    async def main(self) -> None:
        try:
            async with asyncio.timeout(self.args.deadline):
                await self._scenario()
        except TimeoutError:
            self.error = f"deadline: the run passed {self.args.deadline:.0f} s and was stopped"
        finally:
            self._read_node_log()

    async def _scenario(self) -> None:
        pg, redis = PrivatePostgres(), PrivateRedis()
        # Last in, first out: each log is copied before its directory goes.
        self._on_cleanup(pg.cleanup)
        self._on_cleanup(lambda: self._keep_logs(pg.dir / "postgres.log"))
        self._on_cleanup(redis.cleanup)
        self._on_cleanup(lambda: self._keep_logs(redis.dir / "redis.log"))
        await asyncio.to_thread(pg.init)
        await asyncio.to_thread(redis.start)
        data_dir = Path(tempfile.mkdtemp(prefix="cc-chaos-node-"))
        self._on_cleanup(lambda: shutil.rmtree(data_dir, ignore_errors=True))
        self._on_cleanup(lambda: self._keep_logs(data_dir / "node.log"))
        port = free_port()
        self.node = NodeProcess(self._node_env(pg, redis, data_dir, port), data_dir, port)
        self._on_cleanup(self.node.stop)
        connector = aiohttp.TCPConnector(limit=self.args.window + 16)
        async with aiohttp.ClientSession(connector=connector) as session:
            api = Api(session, f"http://127.0.0.1:{port}/api/v1", ADMIN_TOKEN)
            self.node.start()
            await self._healthy(api, 120)
            await self._prepare(api)
            await self._under_fire(api, pg, redis)

    def _node_env(
        self, pg: PrivatePostgres, redis: PrivateRedis, data_dir: Path, port: int
    ) -> dict[str, str]:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCORE_")}
        return env | {
            "CLOUDCORE_NODE__ID": "chaos-node",
            "CLOUDCORE_NODE__DATA_DIR": str(data_dir),
            "CLOUDCORE_LOG__FORMAT": "json",
            "CLOUDCORE_LOG__LEVEL": self.args.log_level,
            "CLOUDCORE_STORE__BACKEND": "postgres",
            "CLOUDCORE_STORE__POSTGRES_DSN": pg.dsn,
            "CLOUDCORE_STORE__AUTO_UPGRADE": "true",
            "CLOUDCORE_EVENTS__BACKEND": "redis",
            "CLOUDCORE_EVENTS__REDIS_URL": redis.url,
            "CLOUDCORE_API__PORT": str(port),
            "CLOUDCORE_API__RATE_LIMIT": "1000000",
            "CLOUDCORE_API__RATE_BURST": "1000000",
            "CLOUDCORE_DEMO__HOSTS": str(self.args.hosts),
            "CLOUDCORE_DEMO__HOST_CPUS": "64",
            "CLOUDCORE_DEMO__HOST_MEMORY_MIB": str(256 * 1024),
            "CLOUDCORE_ADMIN_TOKEN": ADMIN_TOKEN,
        }

    async def _healthy(self, api: Api, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with api.session.get(
                    api.base + "/health", timeout=aiohttp.ClientTimeout(total=2)
                ) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the node did not answer /health within {timeout:.0f} s")

    async def _prepare(self, api: Api) -> None:
        """Quotas for the tenant (so its usage is counted) and every demo host healthy."""
        for resource in ("vms", "cpus", "memory_mib"):
            await api.call("PUT", f"/tenants/{TENANT}/quotas/{resource}", {"maximum": 10**9})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            hosts = await api.pages("/hosts")
            if sum(h["health"] == "HEALTHY" for h in hosts) >= self.args.hosts:
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the {self.args.hosts} demo hosts were not healthy within 120 s")

    async def _under_fire(self, api: Api, pg: PrivatePostgres, redis: PrivateRedis) -> None:
        self.subscriber = Subscriber(api)
        background = [
            asyncio.create_task(self.subscriber.run()),
            asyncio.create_task(self._supervise(api)),
        ]
        try:
            load = asyncio.create_task(self._load(api))
            await self._faults(api, pg, redis, load)
            watch = asyncio.create_task(self._watch(api, load))
            await load
            await watch
            await self._await_events()
            self.in_history = await api.finished_in_history()
            self.vms = await api.vms(TENANT)
            self.used = await api.quota_used(TENANT)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def _load(self, api: Api) -> None:
        give_up_at = self.t0 + self.args.deadline - self.args.settle_s - 60
        body = {"datacenter_id": "dc1", "cpus": 1, "memory_mib": 256, "tenant_id": TENANT}

        async def worker() -> None:
            while self.started < len(self.requests):
                request = self.requests[self.started]
                self.started += 1
                await deploy(api, request, {**body, "name": request.name}, give_up_at)
                self.answered += 1
                async with self._progress:
                    self._progress.notify_all()

        try:
            await asyncio.gather(*(worker() for _ in range(self.args.window)))
            self.load_end = time.monotonic()
        finally:
            async with self._progress:
                self._progress.notify_all()

    async def _supervise(self, api: Api) -> None:
        """Restart a node that ended by itself (a service manager's job), and count it."""
        assert self.node is not None
        while True:
            await asyncio.sleep(0.5)
            async with self._node_lock:
                code = self.node.exited()
                if code is not None:
                    self.unplanned_exits.append({"at_s": self._t(), "code": code})
                    self.node.start()

    # -- faults ----------------------------------------------------------------------------

    async def _faults(
        self, api: Api, pg: PrivatePostgres, redis: PrivateRedis, load: asyncio.Task[None]
    ) -> None:
        """Each fault at a random point of the load's progress (requests answered), one
        after the other."""
        kinds = ["kill -9"] * self.args.kills + ["postgres outage", "redis outage"]
        self.rng.shuffle(kinds)
        points = sorted(self.rng.uniform(0.05, 0.8) for _ in kinds)
        for kind, point in zip(kinds, points, strict=True):
            async with self._progress:
                target = point * len(self.requests)
                await self._progress.wait_for(lambda t=target: self.answered >= t or load.done())
            began = time.monotonic()
            if kind == "kill -9":
                await self._kill(api)
            else:
                backend = pg if kind == "postgres outage" else redis
                await asyncio.to_thread(backend.stop)
                await asyncio.sleep(self.args.outage_s)
                await asyncio.to_thread(backend.start)
            self.last_fault_end = time.monotonic()
            self.faults.append(
                {
                    "fault": kind,
                    "at_answered": self.answered,
                    "at_s": self._t(began),
                    "end_s": self._t(self.last_fault_end),
                }
            )

    async def _kill(self, api: Api) -> None:
        assert self.node is not None
        async with self._node_lock:
            self.node.kill9()
            self.node.start()
        await self._healthy(api, 120)

    # -- after the last fault --------------------------------------------------------------

    async def _watch(self, api: Api, load: asyncio.Task[None]) -> None:
        """Poll the tasks from the end of the last fault: when the requests begun before it
        all have terminal tasks (recovery), how many of them were not 60 s after it (stuck),
        and whether every accepted task ends within --settle-s after the load."""
        assert self.last_fault_end is not None
        last = self.last_fault_end
        cohort = self.requests[: self.started]
        while True:
            with contextlib.suppress(Unavailable):
                self.states = await api.task_states(TENANT)
            now = time.monotonic()
            pending = unfinished(accepted_tasks(cohort), self.states)
            pending += sum(1 for r in cohort if r.final is None)
            if self.recovery_s is None and pending == 0:
                self.recovery_s = now - last
            if self.stuck is None and now - last >= STUCK_AFTER:
                self.stuck = unfinished(accepted_tasks(cohort), self.states)
            everything = load.done() and unfinished(accepted_tasks(self.requests), self.states) == 0
            if everything and self.recovery_s is not None:
                break
            if (
                load.done()
                and self.load_end
                and now - max(last, self.load_end) >= self.args.settle_s
            ):
                break
            await asyncio.sleep(1.0)
        if self.stuck is None:  # everything ended before: terminal states are for good
            self.stuck = 0
        if self.recovery_s is None:
            self.recovery_s, self.recovery_capped = time.monotonic() - last, True

    async def _await_events(self) -> None:
        assert self.subscriber is not None
        deadline = time.monotonic() + EVENT_GRACE
        tasks = accepted_tasks(self.requests)
        while time.monotonic() < deadline:
            if events_missing(tasks, self.states, self.subscriber.finished) == 0:
                return
            await asyncio.sleep(0.5)

    # -- the report ------------------------------------------------------------------------

    def _read_node_log(self) -> None:
        if self.node is None:
            return
        try:
            with open(self.node.data_dir / "node.log", errors="replace") as f:
                for line in f:
                    if line.startswith("{"):
                        try:
                            record = json.loads(line)
                        except ValueError:
                            continue
                        level = record.get("level")
                        if level in ("warning", "error", "critical"):
                            self.log_errors[f"{level} {record.get('event')}"] += 1
                    elif line.startswith("Traceback"):
                        self.log_errors["(traceback)"] += 1
        except OSError:
            pass

    def _keep_logs(self, path: Path) -> None:
        if self.args.keep_logs and path.exists():
            Path(self.args.keep_logs).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(self.args.keep_logs) / path.name)

    def report(self, error: str | None) -> dict[str, Any]:
        from _chaos_report import compose

        return compose(self, error)
