"""A cluster of ``cloudcore serve`` processes on this machine: one server node and one
remote-services node per datacenter, on PostgreSQL, Redis and RabbitMQ.

Each cluster gets a database of its own (on the machine's PostgreSQL), a vhost of its own on
the broker and a stream key of its own in Redis, all removed by :meth:`Cluster.remove`. Nodes
are started, killed (SIGKILL) and stopped by PID; each logs JSON to ``<root>/<node>.log``.
The integration tests and ``scripts/bench cluster-e2e`` use it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import redis

from tests.contract.store import _pg
from tests.integration.state.servers import free_port

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "cc-test-admin-" + "0123456789abcdef" * 2


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=timeout
    ).stdout


class Cluster:
    """``datacenters`` each get ``hosts`` simulated hosts (the server's demo) and a
    remote-services node ``node-<dc>``; ``server`` is the API node. ``lease`` is the datacenter
    lease in seconds."""

    def __init__(
        self,
        root: Path,
        datacenters: tuple[str, ...] = ("dc1", "dc2"),
        *,
        hosts: int = 2,
        lease: float = 3.0,
        log_level: str = "info",
        admin_dsn: str = _pg.ADMIN_DSN,
        amqp_url: str = "",
        redis_url: str = "redis://127.0.0.1:6379/0",
        fast: bool = True,
    ) -> None:
        """``amqp_url``: a broker vhost to use as it is (default: a new vhost on the machine's
        broker); ``admin_dsn`` and ``redis_url``: the PostgreSQL and Redis to use. ``fast``:
        heartbeats, failure detection and the watchdog at test speed (else conf/'s defaults)."""
        self.root = root
        self.datacenters = datacenters
        self.hosts = hosts
        self.lease = lease
        self.log_level = log_level
        self.tag = f"cc-profiles-{secrets.token_hex(4)}"
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.dsn = ""
        self.admin_dsn = admin_dsn
        self.amqp_url = amqp_url
        self._own_vhost = not amqp_url
        self.redis_url = redis_url
        self.stream = f"{self.tag}:events"
        self.fast = fast
        #: The remote-services nodes run DHCP servers (``[network] dhcp``), each under its own
        #: data directory.
        self.dhcp = False
        #: More environment for a node, by node name (its settings for one test).
        self.node_env: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------------ backends

    async def create(self) -> None:
        """The database (schema applied), the vhost and the stream key."""
        from cloudcore.store.postgres import PostgresStore

        self.dsn = await _pg.create_database("cc_profiles", self.admin_dsn)
        store = await PostgresStore.connect(self.dsn, pool_size=1)
        try:
            await store.upgrade()
        finally:
            await store.close()
        if self._own_vhost:
            await asyncio.to_thread(rabbitmqctl, "add_vhost", self.tag)
            await asyncio.to_thread(
                rabbitmqctl, "set_permissions", "-p", self.tag, "guest", ".*", ".*", ".*"
            )
            self.amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{quote(self.tag, safe='')}"

    async def remove(self) -> None:
        """Stop every node, then drop the database, the vhost and the stream key."""
        await asyncio.to_thread(self.stop_all)
        if self.amqp_url and self._own_vhost:
            await asyncio.to_thread(rabbitmqctl, "delete_vhost", self.tag)
        if self.dsn:
            await _pg.drop_database(self.dsn, self.admin_dsn)
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{self.tag}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    # ------------------------------------------------------------------ nodes

    def env(self, node: str, profile: str, datacenter: str = "") -> dict[str, str]:
        data_dir = self.root / node
        env = {
            **os.environ,
            "CLOUDCORE_ADMIN_TOKEN": TOKEN,
            "CLOUDCORE_NODE__ID": node,
            "CLOUDCORE_NODE__DATA_DIR": str(data_dir),
            "CLOUDCORE_NODE__PROFILE": profile,
            # One image library for every node, as an NFS export would be: uploads on the
            # server, conversions and clones on the datacenter's node.
            "CLOUDCORE_IMAGES__REPOSITORY_DIR": str(self.root / "images"),
            "CLOUDCORE_LOG__FORMAT": "json",
            "CLOUDCORE_LOG__LEVEL": self.log_level,
            "CLOUDCORE_STORE__BACKEND": "postgres",
            "CLOUDCORE_STORE__POSTGRES_DSN": self.dsn,
            "CLOUDCORE_STORE__POOL_SIZE": "4",
            "CLOUDCORE_EVENTS__BACKEND": "redis",
            "CLOUDCORE_EVENTS__REDIS_URL": self.redis_url,
            "CLOUDCORE_EVENTS__STREAM": self.stream,
            "CLOUDCORE_TRANSPORT__KIND": "amqp",
            "CLOUDCORE_TRANSPORT__AMQP_URL": self.amqp_url,
            "CLOUDCORE_TRANSPORT__EXCHANGE": self.tag,
            "CLOUDCORE_TRANSPORT__RECONNECT_MAX_DELAY": "1.0",
            "CLOUDCORE_CLUSTER__LEASE_SECONDS": str(self.lease),
            "CLOUDCORE_ORCHESTRATOR__STOP_TIMEOUT": "0.5",
            "CLOUDCORE_API__PORT": str(self.port),
            "CLOUDCORE_API__RATE_LIMIT": "100000",
            "CLOUDCORE_API__RATE_BURST": "100000",
            "CLOUDCORE_DEMO__DATACENTER": ",".join(self.datacenters),
            "CLOUDCORE_DEMO__HOSTS": str(self.hosts),
        }
        if self.fast:
            env["CLOUDCORE_CLUSTER__HEARTBEAT_INTERVAL"] = "0.25"
            env["CLOUDCORE_CLUSTER__NODE_TIMEOUT"] = "1.5"
            env["CLOUDCORE_ORCHESTRATOR__WATCHDOG_INTERVAL"] = "1.0"
        env.update(self.node_env.get(node, {}))
        if datacenter and self.dhcp:
            env["CLOUDCORE_NETWORK__DHCP"] = "true"
        if datacenter:
            env["CLOUDCORE_NODE__CAPABILITIES"] = f'{{ datacenter = "{datacenter}" }}'
        return env

    def node_of(self, datacenter: str) -> str:
        return f"node-{datacenter}"

    async def start(
        self,
        node: str,
        timeout: float = 60.0,
        *,
        datacenter: str | None = None,
        amqp_url: str | None = None,
    ) -> None:
        """Start ``server``, ``monolithic`` (everything in one process, no broker) or
        ``node-<dc>`` (or any node of ``datacenter``) and wait for its ``node.started`` line.
        ``amqp_url``: reach the broker there (a proxy) instead."""
        if node == "server":
            env = self.env(node, "server")
        elif node == "monolithic":
            env = self.env(node, "monolithic")
            env["CLOUDCORE_TRANSPORT__KIND"] = "local"
        else:
            env = self.env(node, "remote-services", datacenter or node.removeprefix("node-"))
        if amqp_url is not None:
            env["CLOUDCORE_TRANSPORT__AMQP_URL"] = amqp_url
        offset = self.log_size(node)
        self.procs[node] = await asyncio.to_thread(self._spawn, node, env)
        await self.wait_for_log(node, "node.started", offset, timeout)

    def _spawn(self, node: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{node}.log", "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "cloudcore.app.cli", "serve"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    async def start_all(self) -> None:
        await self.start("server")  # first: its demo writes the datacenters and hosts
        await asyncio.gather(*(self.start(self.node_of(dc)) for dc in self.datacenters))

    async def wait_for_log(
        self, node: str, event: str, offset: int = 0, timeout: float = 60.0, **fields: object
    ) -> dict[str, object]:
        """The first log record of ``node`` after byte ``offset`` with this event (and fields)."""
        deadline = time.monotonic() + timeout
        log = self.root / f"{node}.log"
        while time.monotonic() < deadline:
            proc = self.procs.get(node)
            for record in self.records(node, offset):
                if record.get("event") == event and all(
                    record.get(k) == v for k, v in fields.items()
                ):
                    return record
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{node} exited {proc.returncode}:\n{log.read_text()[-4000:]}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {event} {fields} from {node}:\n{log.read_text()[-4000:]}")

    def records(self, node: str, offset: int = 0) -> list[dict[str, object]]:
        log = self.root / f"{node}.log"
        if not log.exists():
            return []
        with open(log, "rb") as f:
            f.seek(offset)
            lines = f.read().splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def log_size(self, node: str) -> int:
        log = self.root / f"{node}.log"
        return log.stat().st_size if log.exists() else 0

    def kill(self, node: str) -> None:
        """SIGKILL: no lease released, nothing flushed."""
        proc = self.procs.pop(node)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self, node: str) -> int:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def stop_all(self) -> None:
        for node in list(self.procs):
            self.stop(node)

    def pid_of(self) -> dict[str, int]:
        """The PID of each running node."""
        return {node: proc.pid for node, proc in self.procs.items()}
