"""Balancing from the command line, against a real ``cloudcore serve``: a datacenter's policy
set and shown, a plan shown without moving anything, and wrong use refused."""

from __future__ import annotations

import json
from typing import Any

from tests.component.cli.conftest import Node


def _json(node: Node, *args: str) -> Any:
    return json.loads(node.ok(*args, "-o", "json").stdout)


def test_a_policy_is_set_and_a_plan_is_shown_without_moving_anything(node: Node) -> None:
    dc = _json(node, "datacenter", "balance", "dc1", "spread")
    assert dc["balance_policy"] == "spread"
    assert "spread" in node.ok("datacenter", "list").stdout.splitlines()[-1].split()
    plan = _json(node, "datacenter", "balance", "dc1", "--plan", "consolidate")
    assert plan["policy"] == "consolidate" and plan["explanation"]
    table = node.ok("datacenter", "balance", "dc1", "--plan", "spread").stdout
    assert "EXPLANATION:" in table and "SPREAD BEFORE:" in table
    assert _json(node, "datacenter", "balance", "dc1", "off")["balance_policy"] == "off"


def test_a_policy_and_a_plan_at_once_or_neither_is_refused(node: Node) -> None:
    both = node.cli("datacenter", "balance", "dc1", "spread", "--plan", "spread")
    assert both.returncode != 0 and "give a POLICY to set, or --plan POLICY" in both.stderr
    neither = node.cli("datacenter", "balance", "dc1")
    assert neither.returncode != 0
    wrong = node.cli("datacenter", "balance", "dc1", "sideways")
    assert wrong.returncode != 0 and "invalid choice" in wrong.stderr
