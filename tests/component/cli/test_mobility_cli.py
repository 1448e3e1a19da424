"""Mobility from the command line, against a real ``cloudcore serve`` on its demonstration
hosts (simulated migration): a VM made HA, migrated with ``--wait``; its host put in
maintenance with ``--wait`` and the maintenance cancelled; an abort of a migration that has
ended refused with the API's message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.component.cli.conftest import Node


def _json(node: Node, *args: str) -> Any:
    return json.loads(node.ok(*args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def migrated(node: Node) -> tuple[str, str]:
    """An HA VM made and migrated with the CLI: (its id, the host it left)."""
    task = _json(
        node, "vm", "create", "--name", "mob", "--datacenter", "dc1", "--cpus", "1",
        "--memory", "256", "--ha", "--ha-priority", "3", "--wait",
    )  # fmt: skip
    vm_id = str(task["subject"]).removeprefix("vm/")
    before = _json(node, "vm", "show", vm_id)
    assert (before["spec"]["ha"], before["spec"]["ha_priority"]) == (True, 3)
    moved = node.ok("vm", "migrate", vm_id, "--wait")
    assert "migrate: DONE" in moved.stderr and "SUCCEEDED" in moved.stderr.splitlines()[-1]
    return vm_id, before["host_id"]


def test_a_vm_migrates_with_wait_and_its_ha_can_be_switched_off(
    node: Node, migrated: tuple[str, str]
) -> None:
    vm_id, left = migrated
    after = _json(node, "vm", "ha", vm_id, "off")
    assert after["spec"]["ha"] is False and after["host_id"] != left


def test_a_host_drains_with_wait_then_its_maintenance_is_cancelled(
    node: Node, migrated: tuple[str, str]
) -> None:
    vm_id, _ = migrated
    host = _json(node, "vm", "show", vm_id)["host_id"]
    drained = node.ok("host", "maintenance", host, "--wait")
    assert "drain: DONE" in drained.stderr, drained.stderr
    assert _json(node, "host", "show", host)["admin_state"] == "MAINTENANCE"
    assert _json(node, "vm", "show", vm_id)["host_id"] != host
    assert _json(node, "host", "maintenance", host, "--cancel")["admin_state"] == "ENABLED"


def test_an_abort_of_an_ended_migration_exits_1_saying_so(
    node: Node, migrated: tuple[str, str]
) -> None:
    vm_id, _ = migrated
    tasks = _json(node, "task", "list", "--subject", f"vm/{vm_id}")["items"]
    done = next(t for t in tasks if t["kind"] == "vm.migrate")
    refused = node.cli("task", "abort", done["id"])
    assert refused.returncode == 1 and "has ended" in refused.stderr
