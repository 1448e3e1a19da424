"""The journey the product promises, end to end against a real ``cloudcore serve``: create a
VM with the CLI and watch it reach RUNNING, see it in the operator console's tree, read its
events."""

from __future__ import annotations

import json
import sys

import pexpect

from tests.component.cli.conftest import Node


def test_create_with_the_cli_see_it_in_the_console_tree_and_read_its_events(node: Node) -> None:
    created = node.ok(
        "vm", "create", "--name", "journey", "--datacenter", "dc1", "--cpus", "1",
        "--memory", "256", "--wait", "-o", "json",
    )  # fmt: skip
    assert "100%" in created.stderr and "SUCCEEDED" in created.stderr
    vm_id = json.loads(created.stdout)["subject"].removeprefix("vm/")
    shown = json.loads(node.ok("vm", "show", vm_id, "-o", "json").stdout)
    assert shown["state"] == "RUNNING" and shown["power"] == "ON"

    shell = pexpect.spawn(
        sys.executable,
        ["-m", "cloudcore.app.cli", "console"],
        env=node.env(CLOUDCORE_HISTORY=str(node.data_dir / "history")),
        encoding="utf-8",
        timeout=30,
        dimensions=(50, 250),
    )
    try:
        shell.expect("connected to node ")
        shell.sendline(f"tree /user/dc/dc1/{shown['host_id']}")
        shell.expect(rf"{vm_id}\s+VMActor\s+running")
        shell.sendline("quit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)

    events = node.ok("events", "--subject", f"vm/{vm_id}", "-o", "json").stdout
    states = [e["data"]["state"] for e in json.loads(events)["items"]]
    assert "PROVISIONING" in states and states[0] == "RUNNING", states  # the newest first
