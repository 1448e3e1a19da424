"""API worker processes: ``[api] workers = N`` serves the API from N processes on one port.

The node started by ``cloudcore serve`` is the first; once it has started (its first start
makes the admin token and the demo alone), it starts N - 1 more, each a ``server``
node of its own (node id ``<node.id>-w<k>``) on the same settings, bound to the same port with
SO_REUSEPORT so that the kernel spreads new connections among them. Each worker has the store,
the event bus and the cluster transport a server node has (operations reach the datacenters'
nodes as from any server node), so the profile must be ``server``: a monolithic node's
datacenter actors live in its one process, which a worker could not reach. The workers are
stopped (SIGTERM, then SIGKILL after a deadline) when the node stops, and only they.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from cloudcore.app.profiles import Plan
from cloudcore.config import Settings
from cloudcore.errors import ConfigError
from cloudcore.logging import get_logger

__all__ = ["WORKER_ENV", "Workers", "check_workers", "is_worker"]

#: Set in a worker's environment (its number): a worker starts no workers of its own.
WORKER_ENV = "CC_API_WORKER"  # not CLOUDCORE_*: those are settings

_log = get_logger("cloudcore.app.workers")


def check_workers(settings: Settings, plan: Plan) -> None:
    """ConfigError naming ``api.workers`` if more than one cannot work for this node."""
    if settings.api.workers > 1 and plan.profile != "server":
        raise ConfigError(
            f"api.workers = {settings.api.workers} needs node.profile = 'server' (each worker "
            f"is a server node of its own); node.profile is {plan.profile!r}"
        )


def is_worker() -> bool:
    return bool(os.environ.get(WORKER_ENV))


class Workers:
    """The worker processes this node started."""

    def __init__(self, processes: list[subprocess.Popen[bytes]]) -> None:
        self.processes = processes

    @classmethod
    def start(cls, settings: Settings, config: str | None) -> Workers:
        """Start ``api.workers - 1`` workers running ``cloudcore serve`` on ``config``."""
        processes = []
        for k in range(1, settings.api.workers):
            node_id = f"{settings.node.id}-w{k}"
            command = [sys.executable, "-m", "cloudcore.app.cli"]
            command += ["--config", config] if config else []
            command += ["serve", "--profile", settings.node.profile]
            env = {**os.environ, "CLOUDCORE_NODE__ID": node_id, WORKER_ENV: str(k)}
            processes.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL))
            _log.info("api.worker_started", worker=node_id, pid=processes[-1].pid)
        return cls(processes)

    def stop(self, timeout: float = 15.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _log.warning("api.worker_killed", pid=process.pid)
                process.kill()
                process.wait()
