"""``cloudcore volume ...`` end to end against a real ``cloudcore serve`` (its demo datacenter
has a simulated storage pool and hosts whose volume attach is simulated): the journey the issue
asks for, each command a subprocess."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.component.cli.conftest import Node


def _json(node: Node, *args: str) -> Any:
    return json.loads(node.ok(*args, "-o", "json").stdout)


@pytest.mark.timeout(180)  # a dozen CLI processes, each a Python start
def test_create_attach_extend_snapshot_detach_delete(node: Node) -> None:
    task = _json(node, "volume", "create", "--name", "db", "--datacenter", "dc1", "--size", "8",
                 "--wait")  # fmt: skip
    assert task["state"] == "SUCCEEDED"
    vol = task["subject"].removeprefix("volume/")
    vm_task = _json(node, "vm", "create", "--name", "db-vm", "--datacenter", "dc1", "--cpus", "1",
                    "--memory", "256", "--wait")  # fmt: skip
    vm = vm_task["subject"].removeprefix("vm/")

    assert _json(node, "volume", "attach", vol, "--vm", vm, "--wait")["state"] == "SUCCEEDED"
    shown = _json(node, "volume", "show", vol)
    assert (shown["state"], shown["vm_id"], shown["device"]) == ("ATTACHED", vm, "simulated:sda")

    assert _json(node, "volume", "extend", vol, "--size", "16", "--wait")["state"] == "SUCCEEDED"
    assert _json(node, "volume", "snapshot", vol, "before", "--wait")["state"] == "SUCCEEDED"
    (snap,) = _json(node, "volume", "snapshots", vol)["items"]
    assert (snap["name"], snap["size_gib"]) == ("before", 16)
    done = _json(node, "volume", "delete-snapshot", vol, snap["id"], "--wait")
    assert done["state"] == "SUCCEEDED"
    assert _json(node, "volume", "detach", vol, "--wait")["state"] == "SUCCEEDED"
    table = node.ok("volume", "list").stdout
    assert vol in table and "AVAILABLE" in table and "16" in table
    assert _json(node, "volume", "delete", vol, "--wait")["state"] == "SUCCEEDED"
    assert vol not in node.ok("volume", "list").stdout


def test_an_illegal_action_exits_1_naming_the_state(node: Node) -> None:
    task = _json(node, "volume", "create", "--name", "x", "--datacenter", "dc1", "--size", "1",
                 "--wait")  # fmt: skip
    result = node.cli("volume", "detach", task["subject"].removeprefix("volume/"))
    assert result.returncode == 1
    assert "it is AVAILABLE; allowed now: attach" in result.stderr


def test_pools_show_the_demo_pool(node: Node) -> None:
    (pool,) = _json(node, "volume", "pools")
    assert (pool["id"], pool["driver"], pool["connected"]) == ("dc1-pool", "simulated", True)


@pytest.mark.timeout(120)
def test_a_vm_created_with_boot_volume_boots_from_it_and_its_delete_deletes_it(
    node: Node,
) -> None:
    _json(node, "volume", "create", "--name", "root", "--datacenter", "dc1", "--size", "2",
          "--wait")  # fmt: skip
    vm_task = _json(node, "vm", "create", "--name", "booted", "--datacenter", "dc1", "--cpus",
                    "1", "--memory", "256", "--boot-volume", "root", "--delete-on-termination",
                    "--wait")  # fmt: skip
    assert vm_task["state"] == "SUCCEEDED", vm_task
    vm = vm_task["subject"].removeprefix("vm/")
    shown = _json(node, "volume", "show", "root")
    assert (shown["state"], shown["vm_id"]) == ("ATTACHED", vm)
    assert _json(node, "vm", "show", vm)["spec"]["boot_volume"]["delete_on_termination"] is True
    assert _json(node, "vm", "delete", vm, "--wait")["state"] == "SUCCEEDED"
    assert "root" not in node.ok("volume", "list").stdout
    alone = node.cli("vm", "create", "--name", "x", "--datacenter", "dc1", "--cpus", "1",
                     "--memory", "256", "--delete-on-termination")  # fmt: skip
    assert alone.returncode != 0 and "--delete-on-termination goes with --boot-volume" in (
        alone.stderr
    )
