"""A private tgtd for the tests: its own control socket (``-C``) and a loopback portal port.

tgtd ignores SIGTERM; it is stopped the way Debian's unit stops it (offline, targets dropped,
``tgtadm --op delete --mode system``), then by PID with SIGKILL if it is still there. It needs
root (it creates its control socket under /var/run/tgtd) and Debian's ``tgt``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

SOCKET_DIR = Path("/var/run/tgtd")
TOOLS = ("tgtd", "tgtadm", "iscsi-inq", "iscsi-readcapacity16", "qemu-io", "qemu-img")


def why_not_runnable() -> str | None:
    """Why a private tgtd cannot run here (printed as the skip reason), or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"missing {', '.join(missing)}: install tgt, libiscsi-bin, qemu-utils, qemu-block-extra"
        )
    if os.geteuid() != 0:
        return "tgtd needs root (its control socket lives in /var/run/tgtd)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tgtd:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.portal_port = _free_port()
        self.control_port = self._free_control_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _free_control_port() -> int:
        while True:
            port = random.randint(1000, 32000)  # tgtd refuses larger ones
            if not (SOCKET_DIR / f"socket.{port}").exists():
                return port

    @property
    def socket(self) -> Path:
        return SOCKET_DIR / f"socket.{self.control_port}"

    def _tgtadm(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["tgtadm", "-C", str(self.control_port), *args], capture_output=True, timeout=10
        )

    def start(self) -> None:
        SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "tgtd.log"
        with log.open("ab") as out:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                ["tgtd", "-f", "-C", str(self.control_port),
                 "--iscsi", f"portal=127.0.0.1:{self.portal_port}"],
                stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tgtd exited {self._proc.returncode}: see {log}")
            if self._tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target").returncode == 0:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.portal_port), timeout=0.2),
                ):
                    return
            time.sleep(0.05)  # a daemon coming up: nothing to await but its socket
        self.stop()
        raise RuntimeError(f"tgtd did not come up within 10 s: see {log}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._tgtadm("--op", "update", "--mode", "sys", "--name", "State", "-v", "offline")
        self._tgtadm("--op", "delete", "--mode", "system")
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()  # by its PID: this process is ours
            proc.wait(timeout=5)
        for path in (self.socket, Path(f"{self.socket}.lock")):
            path.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop and start again on the same ports: a tgtd that forgot every target."""
        self.stop()
        self.start()
