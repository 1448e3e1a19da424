"""The ``cloudcore`` command line end to end: each command a subprocess, against a real
``cloudcore serve`` (see conftest), the way a user runs them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.component.cli.conftest import Lines, Node


def _create(node: Node, name: str, *extra: str) -> str:
    """A VM made with ``vm create --wait``; returns its id."""
    result = node.ok(
        "vm", "create", "--name", name, "--datacenter", "dc1", "--cpus", "1", "--memory", "256",
        "--wait", "-o", "json", *extra,
    )  # fmt: skip
    task = json.loads(result.stdout)
    assert task["state"] == "SUCCEEDED"
    return str(task["subject"]).removeprefix("vm/")


def _vm(node: Node, vm_id: str) -> dict[str, Any]:
    return dict(json.loads(node.ok("vm", "show", vm_id, "-o", "json").stdout))


@pytest.fixture(scope="module")
def created(node: Node) -> tuple[subprocess.CompletedProcess[str], str]:
    """``vm create --wait`` as a user types it (table output, progress on stderr)."""
    result = node.cli(
        "vm", "create", "--name", "web", "--datacenter", "dc1", "--cpus", "2", "--memory", "512",
        "--wait",
    )  # fmt: skip
    last = result.stderr.splitlines()[-1]  # 100% vm.deploy vm/<id> SUCCEEDED
    vm_id = next(word for word in last.split() if word.startswith("vm/")).removeprefix("vm/")
    return result, vm_id


def test_create_wait_exits_0_showing_each_step_up_to_100_percent(
    created: tuple[subprocess.CompletedProcess[str], str],
) -> None:
    result, _ = created
    assert result.returncode == 0, result.stderr
    progress = result.stderr.splitlines()
    for step in ("schedule", "define", "start"):
        assert any(f"{step}: DONE" in line for line in progress), result.stderr
    assert progress[-1].startswith("100% vm.deploy vm/") and progress[-1].endswith("SUCCEEDED")
    assert result.stdout == ""  # the bar's last line says it all


def test_list_shows_the_vm_running_as_a_table_and_as_json(
    node: Node, created: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    _, vm_id = created
    table = node.ok("vm", "list").stdout.splitlines()
    assert table[0].split() == [
        "ID", "NAME", "STATE", "POWER", "DATACENTER", "HOST", "CPUS", "MEMORY"
    ]  # fmt: skip
    row = next(line.split() for line in table if line.startswith(vm_id))
    assert row[1:4] == ["web", "RUNNING", "ON"]
    assert row[-2:] == ["512", "MiB"]  # a human size in a table, the number in JSON

    page = json.loads(node.ok("vm", "list", "--state", "running", "-o", "json").stdout)
    assert vm_id in [vm["id"] for vm in page["items"]]
    assert all(vm["state"] == "RUNNING" for vm in page["items"])


def test_show_in_yaml_is_the_vm_record(
    node: Node, created: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    _, vm_id = created
    vm = yaml.safe_load(node.ok("vm", "show", vm_id, "-o", "yaml").stdout)
    assert vm["id"] == vm_id
    assert vm["name"] == "web"
    assert vm["spec"]["cpus"] == 2


def test_stop_wait_leaves_the_vm_stopped(node: Node) -> None:
    vm_id = _create(node, "to-stop")
    result = node.ok("vm", "stop", vm_id, "--wait")
    assert "stop: DONE" in result.stderr
    show = node.ok("vm", "show", vm_id).stdout
    assert any(line.split() == ["STATE:", "STOPPED"] for line in show.splitlines()), show


def test_an_illegal_action_exits_1_with_the_apis_message_naming_the_state(node: Node) -> None:
    vm_id = _create(node, "never-started", "--no-start")
    assert _vm(node, vm_id)["state"] == "STOPPED"
    result = node.cli("vm", "pause", vm_id)
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("cloudcore: ") and "STOPPED" in message
    assert "illegal_transition" in message
    assert "Traceback" not in result.stderr


def test_a_bad_token_exits_1_saying_the_token_is_refused(node: Node) -> None:
    result = node.cli("vm", "list", env=node.env(CLOUDCORE_TOKEN="not-a-token"))
    assert result.returncode == 1
    assert "the API token is unknown, revoked or expired" in result.stderr
    assert "--token" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_a_token_the_admin_token_of_the_local_node_is_used(node: Node) -> None:
    env = node.env(CLOUDCORE_NODE__DATA_DIR=str(node.data_dir))
    del env["CLOUDCORE_TOKEN"]
    result = node.cli("vm", "list", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert "items" in json.loads(result.stdout)


def test_an_unreachable_api_exits_1_asking_whether_serve_runs(node: Node) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    url = f"http://127.0.0.1:{port}/api/v1"
    result = node.cli("--api", url, "vm", "list")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"cloudcore: cannot reach the API at {url}: is `cloudcore serve` running?"
    )


def test_events_list_the_vms_state_changes(
    node: Node, created: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    _, vm_id = created
    args = ("events", "--type", "vm.state_changed", "--subject", f"vm/{vm_id}", "--all-pages")
    page = json.loads(node.ok(*args, "-o", "json").stdout)
    assert page["items"], "no vm.state_changed events"
    assert {e["type"] for e in page["items"]} == {"vm.state_changed"}
    assert "RUNNING" in [e["data"]["state"] for e in page["items"]]

    table = node.ok(*args).stdout.splitlines()
    assert table[0].split()[:4] == ["POSITION", "TIME", "TYPE", "SUBJECT"]
    assert all("vm.state_changed" in line for line in table[1:])


def test_events_follow_prints_events_as_they_happen(node: Node) -> None:
    vm_id = _create(node, "followed")
    history = json.loads(node.ok("events", "--subject", f"vm/{vm_id}", "-o", "json").stdout)
    last = history["items"][0]["position"]  # the newest first
    follow = subprocess.Popen(
        [sys.executable, "-m", "cloudcore.app.cli", "events", "--follow", "-o", "json",
         "--subject", f"vm/{vm_id}", "--after", last],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node.env(),
    )  # fmt: skip
    lines = Lines(follow.stdout)
    try:
        node.ok("vm", "stop", vm_id, "--hard")
        states = []
        while "STOPPED" not in states:
            event = json.loads(lines.next())
            assert event["subject"] == f"vm/{vm_id}"
            states.append(event["data"].get("state"))
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=20) == 130
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
        lines.join()
        for pipe in (follow.stdout, follow.stderr):
            if pipe is not None:
                pipe.close()


def test_tasks_show_their_steps_and_hosts_are_listed(
    node: Node, created: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    _, vm_id = created
    tasks = json.loads(node.ok("task", "list", "-o", "json").stdout)["items"]
    deploy = next(t for t in tasks if t["subject"] == f"vm/{vm_id}" and t["kind"] == "vm.deploy")
    task = json.loads(node.ok("task", "show", deploy["id"], "-o", "json").stdout)
    assert [s["name"] for s in task["steps"]] == ["schedule", "define", "start"]
    assert task["progress"] == 1.0

    hosts = node.ok("host", "list").stdout.splitlines()
    assert hosts[0].split()[:2] == ["ID", "NAME"] and "POWER" in hosts[0].split()
    assert any(line.startswith("dc1-h1") and " ON " in line for line in hosts[1:])


def test_a_task_that_fails_makes_wait_exit_1_with_the_tasks_error(node: Node) -> None:
    result = node.cli(
        "vm", "create", "--name", "huge", "--datacenter", "dc1", "--cpus", "1000", "--memory",
        "256", "--wait",
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith("100%") and "FAILED: NoValidHost" in last, result.stderr


def test_on_a_terminal_wait_redraws_one_progress_line(node: Node) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "cloudcore.app.cli", "vm", "create", "--name", "tty", "--datacenter", "dc1",
         "--cpus", "1", "--memory", "256", "--wait", "-o", "json"],
        env=node.env(), encoding="utf-8", timeout=60,
    )  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    output: str = child.before
    progress = output[: output.index("{")]  # then the task, as JSON on stdout
    assert "\x1b[" in progress  # drawn with terminal controls (rich), in colour
    assert "100%" in progress and "vm.deploy" in progress and "SUCCEEDED" in progress
    assert "step 1 schedule" not in progress.split("SUCCEEDED")[-1]  # redrawn, not appended


def test_a_network_is_made_and_a_vm_created_on_it_shows_the_address_it_was_given(
    node: Node,
) -> None:
    made = node.ok(
        "network", "create", "--name", "lan", "--datacenter", "dc1", "--cidr", "10.61.0.0/24",
        "--gateway", "10.61.0.1", "--range", "10.61.0.10-10.61.0.99", "-o", "json",
    )  # fmt: skip
    network = json.loads(made.stdout)
    assert network["ranges"] == [{"first": "10.61.0.10", "last": "10.61.0.99"}]

    vm_id = _create(node, "on-lan", "--nic", "lan=10.61.0.42", "--nic", network["id"])
    shown = _vm(node, vm_id)
    addresses = sorted(a.split()[0] for a in shown["addresses"])
    assert len(addresses) == 2 and "10.61.0.42" in addresses
    assert all(a.startswith("10.61.0.") for a in addresses)
    held = json.loads(node.ok("network", "addresses", "lan", "-o", "json").stdout)
    assert sorted(a["address"] for a in held) == addresses
    assert {a["vm_id"] for a in held} == {vm_id}

    taken = node.cli("vm", "create", "--name", "clash", "--datacenter", "dc1", "--cpus", "1",
                     "--memory", "128", "--nic", "lan=10.61.0.42")  # fmt: skip
    assert taken.returncode == 1 and f"held by VM {vm_id}" in taken.stderr
    unknown = node.cli("network", "show", "nowhere")
    assert unknown.returncode == 1 and "network nowhere not found" in unknown.stderr
    busy = node.cli("network", "delete", "lan")
    assert busy.returncode == 1 and "in use" in busy.stderr
