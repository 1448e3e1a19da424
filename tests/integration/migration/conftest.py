"""Two private libvirtd instances on this machine, "hosts" A and B of one datacenter.

Each runs in a mount namespace of its own (its own /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/cache/libvirt and /var/log/libvirt, bind-mounted from a temporary directory; its own
``host_uuid``, migration ports and unix socket), both in one network namespace made for the
test, so migration traffic stays on a private loopback and nothing touches a libvirtd that may
already run here. Everything started is stopped by PID, and the namespace deleted.
Skipped, with the reason, where namespaces or libvirtd cannot be had (not root, not installed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_HOSTS = (("A", 49200), ("B", 49220))
_MOUNTS = ("etc", "run", "lib", "cache", "log")
_TARGETS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}


@dataclass(frozen=True)
class Daemon:
    name: str
    base: Path
    process: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.base}/sock/libvirt-sock"

    def virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["virsh", "-q", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    def state(self, domain: str) -> str:
        """``running``, ``shut off``... or ``absent``."""
        done = self.virsh("domstate", domain)
        return done.stdout.strip() if done.returncode == 0 else "absent"


def _configure(base: Path, port: int) -> None:
    for sub in (*_MOUNTS, "sock"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "etc" / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{base}/sock"\nunix_sock_rw_perms = "0700"\n'
        'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
        f'host_uuid = "{uuid.uuid4()}"\nlog_outputs = "3:file:{base}/libvirtd.log"\n'
    )
    (base / "etc" / "qemu.conf").write_text(
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nsecurity_driver = "none"\n'
        'stdio_handler = "file"\ncgroup_controllers = [ ]\n'
        f"migration_port_min = {port}\nmigration_port_max = {port + 19}\n"
        f"remote_display_port_min = {port - 40000}\nremote_display_port_max = {port - 39981}\n"
    )


def _start(netns: str, base: Path) -> subprocess.Popen[bytes]:
    mounts = "; ".join(f"mount --bind {base / m} {_TARGETS[m]}" for m in _MOUNTS)
    script = (
        f"{mounts}; exec libvirtd --config /etc/libvirt/libvirtd.conf "
        f"--pid-file {base / 'libvirtd.pid'}"
    )
    with open(base / "stdout.log", "wb") as out:
        launcher = subprocess.Popen(
            [
                *("ip", "netns", "exec", netns, "unshare", "-m", "--propagation", "private"),
                *("sh", "-c", script),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return launcher  # exec keeps the PID: this is libvirtd


def _wait(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def two_libvirtds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    with libvirtd_pair(tmp_path_factory.mktemp("libvirtds")) as pair:
        yield pair


@contextlib.contextmanager
def libvirtd_pair(root: Path) -> Iterator[tuple[Daemon, Daemon]]:
    """Two daemons A and B under ``root``, in a network namespace of their own (skipped, with
    the reason, where that cannot be had); everything stopped and deleted on the way out."""
    if os.geteuid() != 0:
        pytest.skip("two private libvirtd instances need root (namespaces, bind mounts)")
    for tool in ("libvirtd", "virsh", "ip", "unshare", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    netns = f"ccmig-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", netns], check=False).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    daemons: list[Daemon] = []
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        for name, port in _HOSTS:
            base = root / name
            _configure(base, port)
            daemons.append(Daemon(name, base, _start(netns, base)))
        for d in daemons:
            _wait(lambda d=d: d.virsh("version").returncode == 0, f"libvirtd {d.name} answered")
        yield daemons[0], daemons[1]
    finally:
        _stop(netns, daemons)


def _stop(netns: str, daemons: list[Daemon]) -> None:
    for d in daemons:
        for name in d.virsh("list", "--all", "--name").stdout.split():
            d.virsh("destroy", name)
            d.virsh("undefine", name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(d.process.pid, signal.SIGTERM)
    for d in daemons:
        try:
            d.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            d.process.kill()
            d.process.wait(timeout=10)
    # Whatever still lives in the namespace was started by these daemons (QEMU).
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", netns], check=False)
