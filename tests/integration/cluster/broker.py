"""A RabbitMQ node of one test's own, for the tests that stop and start the broker.

The machine's shared broker (127.0.0.1:5672) is never stopped: other test runs use it at the same
time. A private node has its own name (``cc-test-<hex>@localhost``), its own AMQP and Erlang
distribution ports, its data, logs and config in a temporary directory, no plugins, and an Erlang
cookie of its own, which ``rabbitmqctl`` finds through ``HOME``. It registers with the machine's
epmd: a name registry every Erlang node on the host shares, not a broker. Only the processes it
started are ended, by PID, and its directory is removed.

Debian's ``/usr/sbin/rabbitmq-server`` and ``rabbitmqctl`` are wrappers that switch to the
``rabbitmq`` user (whose cookie and home are the shared node's) and send the server's output to
``/var/log/rabbitmq``; the scripts in ``/usr/lib/rabbitmq/bin`` are used directly instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from tests.integration.state.servers import free_port

DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
VHOST = "cloudcore-test"


def _script(name: str) -> str:
    if (DEBIAN_BIN / name).exists():
        return str(DEBIAN_BIN / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install RabbitMQ (scripts/test does)")
    return found


class PrivateBroker:
    """One RabbitMQ node in a temporary directory; ``start``, ``stop_app``/``start_app``
    (the broker goes away and comes back, the Erlang node stays), ``remove``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cc-rabbit-"))
        self.node = f"cc-test-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(VHOST, safe='')}"
        self._process: subprocess.Popen[bytes] | None = None
        self._env = self._environment(dist_port=free_port())

    def _environment(self, dist_port: int) -> dict[str, str]:
        cookie = self.root / ".erlang.cookie"
        cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
        cookie.chmod(0o400)
        (self.root / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's: its NODENAME
        # Not /etc/rabbitmq's (its listener is the shared port). The default vhost, where guest
        # may do anything, is made at the first boot: no rabbitmqctl calls (seconds each).
        (self.root / "rabbitmq.conf").write_text(f"default_vhost = {VHOST}\n")
        (self.root / "enabled_plugins").write_text("[].\n")  # no management plugin
        return {
            **os.environ,
            "HOME": str(self.root),  # where the server and the CLI read the cookie
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",  # should this node have to start epmd itself
        }

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n <this node> ARGS``; its output."""
        return subprocess.run(
            [_script("rabbitmqctl"), "-n", self.node, *args],
            env=self._env,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout

    def start(self, timeout: float = 60) -> None:
        """Start the node and wait until it serves AMQP in a vhost of ours, as guest."""
        with open(self.root / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                [_script("rabbitmq-server")],
                env=self._env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C to pytest is not a ^C to the broker
            )
        self.await_startup(timeout)

    def await_startup(self, timeout: float = 60) -> None:
        """Until the broker application runs and accepts AMQP connections.

        ``rabbitmqctl await_startup`` fails at once while the Erlang node is not registered
        with epmd, and every CLI call costs seconds of VM start on a busy machine: the node's
        PID file (written once it is distributed) is polled first, then the CLI asked."""
        deadline = time.monotonic() + timeout
        self._until(lambda: self._beam_pid() is not None, deadline)
        while True:
            left = max(1, int(deadline - time.monotonic()))
            try:
                self.ctl("await_startup", "--timeout", str(left), timeout=left + 10)
                break
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._check(deadline)
                time.sleep(0.2)
        self._until(self.accepts_connections, deadline)

    def _until(self, predicate: Callable[[], bool], deadline: float) -> None:
        while not predicate():
            self._check(deadline)
            time.sleep(0.05)

    def _check(self, deadline: float) -> None:
        """RuntimeError if the server has exited, TimeoutError past ``deadline``."""
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"RabbitMQ node {self.node} exited:\n{self.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{self.node} did not start in time:\n{self.log()[-4000:]}")

    def accepts_connections(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop_app(self) -> None:
        """Stop the broker application: connections drop, the port closes, the node stays."""
        self.ctl("stop_app")

    def start_app(self, timeout: float = 60) -> None:
        """Start the broker application again; it returns once the application runs."""
        self.ctl("start_app", timeout=timeout)
        self._until(self.accepts_connections, time.monotonic() + timeout)

    def log(self) -> str:
        logs = [self.root / "server.log", *sorted((self.root / "log").glob("*.log"))]
        return "\n".join(p.read_text(errors="replace") for p in logs if p.exists())

    def remove(self) -> None:
        """Stop the node (``rabbitmqctl stop``, else SIGTERM, else SIGKILL to the PIDs started
        here) and delete its directory."""
        process, self._process = self._process, None
        if process is not None:
            beam = self._beam_pid()
            with contextlib.suppress(subprocess.SubprocessError):
                self.ctl("stop", timeout=30)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            if process.poll() is None:
                process.terminate()  # the script stops the VM it started, gracefully
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=15)
            if beam is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(beam, signal.SIGKILL)
            if process.poll() is None:
                process.kill()
            process.wait(timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def beam_pid(self) -> int:
        """The Erlang VM's PID (the broker's process)."""
        pid = self._beam_pid()
        assert pid is not None, "not started"
        return pid

    def _beam_pid(self) -> int | None:
        """The Erlang VM's PID (a child of the script started here), from the node's PID file."""
        try:
            return int((self.root / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None
