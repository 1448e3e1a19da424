"""``cloudcore console`` driven through a pseudo-terminal, against a real ``cloudcore serve``,
as an operator would: look at the tree, inspect, ask, make a mistake, complete a path, leave."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pexpect
import pytest

ROOT = Path(__file__).resolve().parents[3]
CLOUDCORE = str(Path(sys.executable).with_name("cloudcore"))
PROMPT = "cloudcore> "
HOST = "/user/dc/dc1/dc1-h1"


@dataclass
class Node:
    """A ``cloudcore serve`` subprocess, its output drained by threads (a full pipe would
    block the node's event loop)."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    url: str = ""
    listening: threading.Event = field(default_factory=threading.Event)

    def drain(self, pipe: IO[str], lines: list[str]) -> None:
        for line in pipe:
            lines.append(line)
            if not self.url and '"api.listening"' in line:
                self.url = json.loads(line)["url"]
                self.listening.set()
        self.listening.set()  # ended: the node died before listening


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    env = {
        **os.environ,
        "CLOUDCORE_NODE__DATA_DIR": str(tmp_path),
        "CLOUDCORE_STORE__AUTO_UPGRADE": "true",
        "CLOUDCORE_API__PORT": "0",
        "CLOUDCORE_LOG__FORMAT": "json",
    }
    for name in ("CLOUDCORE_TOKEN", "CLOUDCORE_API_URL", "CLOUDCORE_ADMIN_TOKEN"):
        env.pop(name, None)
    process = subprocess.Popen(
        [CLOUDCORE, "serve"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Node(process, env)
    drains = []
    for pipe, lines in ((process.stdout, served.stdout), (process.stderr, served.stderr)):
        assert pipe is not None
        drains.append(threading.Thread(target=served.drain, args=(pipe, lines), daemon=True))
        drains[-1].start()
    try:
        assert served.listening.wait(30), "the node did not start listening within 30 s"
        assert served.url, "the node exited before listening:\n" + "".join(served.stderr)
        yield served
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            for thread in drains:
                thread.join(10)
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
        assert code == 0, "".join(served.stderr[-20:])


def console(node: Node, tmp_path: Path) -> pexpect.spawn:
    env = {**node.env, "CLOUDCORE_HISTORY": str(tmp_path / "history"), "TERM": "dumb"}
    shell = pexpect.spawn(
        CLOUDCORE,
        ["console", "--api", node.url],
        cwd=str(ROOT),
        env=env,
        encoding="utf-8",
        timeout=20,
        dimensions=(50, 200),
    )
    shell.logfile_read = io.StringIO()  # the whole session, for the failure message
    return shell


def test_an_operator_session_over_a_real_node(node: Node, tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    assert f"the admin API token is in {token_file}" in "".join(node.stdout)
    shell = console(node, tmp_path)  # finds the token in <data_dir>/admin-token by itself
    try:
        shell.expect("connected to node ")
        shell.expect_exact(PROMPT)

        shell.sendline("tree")
        shell.expect(r"/user\s+_Guardian\s+running")
        shell.expect(r"\n\s+dc1\s+DatacenterActor\s+running\s+mailbox \d+\s+processed \d+")
        shell.expect(r"\n\s+dc1-h1\s+HostActor\s+running")
        shell.expect(r"\n\s+dc1-h2\s+HostActor\s+running")
        shell.expect_exact(PROMPT)

        shell.sendline(f"inspect {HOST}")
        shell.expect(r"class:\s+HostActor")
        shell.expect(r"status:\s+running")
        shell.expect_exact(PROMPT)

        shell.sendline(f'ask {HOST} {{"type": "GetHost"}}')
        shell.expect_exact(f"Host from {HOST}:")
        shell.expect_exact('"id": "dc1-h1"')
        shell.expect_exact(PROMPT)

        shell.sendline(f'ask {HOST} {{"type": "GetHots"}}')
        # The closest type first (others that look alike may follow), then the status.
        shell.expect_exact("error: unknown message type 'GetHots'; did you mean GetHost")
        shell.expect_exact("? (422)")
        shell.expect_exact(PROMPT)
        shell.sendline("nodes")  # the session goes on after the error
        shell.expect(r"\* \S+\s+up\s+local")
        shell.expect_exact(PROMPT)

        shell.send("inspect /user/dc/dc1/sch\t")
        shell.expect_exact("heduler")  # readline wrote the rest of the name
        shell.sendline("")
        found = shell.expect([r"class:\s+SchedulerActor", "error: "])
        assert found == 0, "the completed path was not /user/dc/dc1/scheduler"
        shell.expect_exact(PROMPT)

        shell.sendline("quit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)
    assert shell.exitstatus == 0
    history = (tmp_path / "history").read_text()
    assert "tree" in history and "inspect /user/dc/dc1/scheduler" in history


def test_errors_print_the_api_message_and_ctrl_c_stops_following(
    node: Node, tmp_path: Path
) -> None:
    shell = console(node, tmp_path)
    try:
        shell.expect_exact(PROMPT)
        shell.sendline("inspect /user/nowhere")
        shell.expect_exact("error: no actor at /user/nowhere (404)")
        shell.expect_exact(PROMPT)
        shell.sendline("restart /system/cluster")
        shell.expect_exact("error: only actors under /user can be restarted or stopped")
        shell.expect_exact(PROMPT)
        shell.sendline("events --follow")
        shell.expect_exact("following events; Ctrl-C stops")
        shell.sendintr()
        shell.expect_exact("stopped following")
        shell.expect_exact(PROMPT)
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)
    assert shell.exitstatus == 0
    assert "Traceback" not in shell.logfile_read.getvalue()
