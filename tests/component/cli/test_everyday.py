"""Everyday use of the command line against a real ``cloudcore serve``, each command a
subprocess: names where ids are taken, listings (order, sort, columns, pages, sizes), deleted
VMs, errors (as JSON, without a trace), datacenters and templates."""

from __future__ import annotations

import json
import sys
from typing import Any

import pexpect
import pytest

from tests.component.cli.conftest import Node


def _create(node: Node, name: str, *extra: str) -> str:
    result = node.ok(
        "vm", "create", "--name", name, "--datacenter", "dc1", "--cpus", "1", "--memory", "256",
        "--wait", "-o", "json", *extra,
    )  # fmt: skip
    return str(json.loads(result.stdout)["subject"]).removeprefix("vm/")


def _json(node: Node, *args: str) -> Any:
    return json.loads(node.ok(*args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def vms(node: Node) -> dict[str, Any]:
    """Three VMs, in this order: ``solo``, and two named ``twin``."""
    return {
        "solo": _create(node, "solo"),
        "twins": [_create(node, "twin", "--no-start"), _create(node, "twin", "--no-start")],
    }


# -- names -------------------------------------------------------------------------------------


def test_a_unique_vm_name_works_where_the_id_does(node: Node, vms: dict[str, Any]) -> None:
    solo = _json(node, "vm", "show", "solo")
    assert solo["id"] == vms["solo"]
    assert solo["tenant_id"] == "system"  # the admin's own tenant, as the README says
    result = node.ok("vm", "reboot", "solo", "--wait")
    assert result.stderr.splitlines()[-1].endswith(f"vm.reboot vm/{vms['solo']} SUCCEEDED")


def test_hosts_and_datacenters_are_found_by_name(node: Node) -> None:
    assert _json(node, "host", "show", "dc1-h1")["id"] == "dc1-h1"
    assert _json(node, "datacenter", "show", "dc1")["id"] == "dc1"


def test_an_ambiguous_name_is_refused_listing_the_candidates(
    node: Node, vms: dict[str, Any]
) -> None:
    result = node.cli("vm", "show", "twin")
    assert result.returncode == 1 and result.stdout == ""
    line = result.stderr.strip()
    assert line.startswith("cloudcore: 2 VMs are named 'twin': ") and "give an id" in line
    assert all(vm_id in line for vm_id in vms["twins"])
    assert "\n" not in line

    as_json = node.cli("vm", "delete", "twin", "-o", "json")
    assert as_json.returncode == 1
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "ambiguous_name"
    assert sorted(error["details"]["candidates"]) == sorted(vms["twins"])


def _made(node: Node, *args: str) -> str:
    return str(_json(node, *args, "--wait")["subject"]).split("/", 1)[1]


@pytest.mark.timeout(180)  # a dozen CLI processes, each a Python start
def test_volumes_and_networks_are_found_by_name_like_vms(node: Node, vms: dict[str, Any]) -> None:
    volume = ("volume", "create", "--datacenter", "dc1", "--size", "1", "--name")
    data = [_made(node, *volume, "data"), _made(node, *volume, "data")]
    logs = _made(node, *volume, "logs")
    assert _json(node, "volume", "show", "logs")["id"] == logs
    assert _json(node, "volume", "attach", "logs", "--vm", "solo", "--wait")["state"] == "SUCCEEDED"
    assert _json(node, "volume", "show", logs)["vm_id"] == vms["solo"]
    assert _json(node, "volume", "detach", "logs", "--wait")["state"] == "SUCCEEDED"
    listed = _json(node, "volume", "list", "--name", "data")
    assert [v["id"] for v in listed["items"]] == data[::-1] and listed["total"] == 2

    ambiguous = node.cli("volume", "delete", "data", "--wait", "-o", "json")
    assert ambiguous.returncode == 1
    error = json.loads(ambiguous.stderr)["error"]
    assert error["code"] == "ambiguous_name"
    assert sorted(error["details"]["candidates"]) == sorted(data)
    line = node.cli("volume", "show", "data").stderr.strip()
    assert line.startswith("cloudcore: 2 volumes are named 'data': ") and data[0] in line

    network = ("network", "create", "--datacenter", "dc1", "--name", "lan", "-o", "json")
    nets = [  # one name, unique in each tenant: the admin sees both
        json.loads(node.ok(*network, "--cidr", "10.71.0.0/24").stdout)["id"],
        json.loads(node.ok(*network, "--cidr", "10.72.0.0/24", "--tenant", "demo").stdout)["id"],
    ]
    shown = node.cli("network", "show", "lan")
    assert shown.returncode == 1 and "2 networks are named 'lan'" in shown.stderr
    assert all(net in shown.stderr for net in nets)
    node.ok("network", "delete", nets[0])
    assert _json(node, "network", "show", "lan")["id"] == nets[1]
    assert node.ok("network", "delete", "lan").stdout.strip() == f"deleted {nets[1]}"


# -- listings ----------------------------------------------------------------------------------


def test_vms_are_listed_newest_first_and_sorted_on_request(node: Node, vms: dict[str, Any]) -> None:
    mine = [vms["solo"], *vms["twins"]]
    listed = [vm["id"] for vm in _json(node, "vm", "list")["items"] if vm["id"] in mine]
    assert listed == mine[::-1]
    by_name = _json(node, "vm", "list", "--sort", "name:asc")["items"]
    names = [vm["name"] for vm in by_name]
    assert names == sorted(names)


def test_columns_are_chosen_by_header_or_field_in_every_format(
    node: Node, vms: dict[str, Any]
) -> None:
    table = node.ok("vm", "list", "--name", "solo", "-c", "name", "-c", "MEMORY").stdout
    assert table.splitlines() == ["NAME  MEMORY", "solo  256 MiB"]
    picked = _json(node, "vm", "list", "--name", "solo", "-c", "id", "-c", "spec.memory_mib")
    assert picked == [{"id": vms["solo"], "spec.memory_mib": 256}]  # raw numbers in JSON
    unknown = node.cli("vm", "list", "-c", "colour")
    assert unknown.returncode == 1 and "no column 'colour'; columns: ID, NAME" in unknown.stderr


def test_a_page_that_is_not_the_last_says_how_many_and_how_to_go_on(
    node: Node, vms: dict[str, Any]
) -> None:
    total = len(_json(node, "vm", "list", "--all")["items"])
    first = node.ok("vm", "list", "--limit", "1")
    assert len(first.stdout.splitlines()) == 2  # the header and one VM
    hint = first.stderr.strip()
    assert hint.startswith(f"-- 1 of {total:,}; --all or --page-token ")
    token = hint.split("--page-token ")[1].split()[0]
    second = _json(node, "vm", "list", "--limit", "1", "--page-token", token)
    page_one = _json(node, "vm", "list", "--limit", "1")
    assert second["items"][0]["id"] != page_one["items"][0]["id"]
    assert node.ok("vm", "list", "--all").stderr == ""  # every page: no hint


def test_event_filters_apply_before_the_limit(node: Node, vms: dict[str, Any]) -> None:
    page = _json(node, "events", "--type", "task.finished", "--limit", "2")
    assert [e["type"] for e in page["items"]] == ["task.finished", "task.finished"]
    table = node.ok("events", "--type", "task.finished", "--limit", "2").stdout.splitlines()
    assert len(table) == 3 and all("task.finished" in line for line in table[1:])


def test_events_are_listed_newest_first_and_sorted_on_request(
    node: Node, vms: dict[str, Any]
) -> None:
    subject = ("--subject", f"vm/{vms['solo']}", "--type", "vm.state_changed")
    newest = _json(node, "events", *subject)["items"]
    positions = [e["position"] for e in newest]
    assert len(positions) >= 3 and positions == sorted(positions, reverse=True)
    assert newest[0]["data"]["state"] == "RUNNING"  # solo was rebooted: running again last
    oldest = _json(node, "events", *subject, "--sort", "position:asc")["items"]
    assert oldest == newest[::-1]
    assert oldest[0]["data"]["state"] == "SCHEDULING"

    first = node.ok("events", *subject, "--limit", "1")
    token = first.stderr.strip().split("--page-token ")[1].split()[0]
    second = _json(node, "events", *subject, "--limit", "1", "--page-token", token)
    assert second["items"] == newest[1:2]
    between = ("--after", positions[-1], "--before", positions[0])
    assert _json(node, "events", *subject, *between)["items"] == newest[1:-1]
    bad = node.cli("events", "--sort", "colour")
    assert bad.returncode == 1 and "sort" in bad.stderr


def test_tables_are_plain_when_piped_and_cut_to_a_terminal(node: Node, vms: dict[str, Any]) -> None:
    piped = node.ok("events", "--limit", "3").stdout
    assert "\x1b[" not in piped and "…" not in piped  # whole values, no colour
    child = pexpect.spawn(
        sys.executable,
        ["-m", "cloudcore.app.cli", "events", "--limit", "3"],
        env=node.env(),
        encoding="utf-8",
        dimensions=(24, 60),
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    lines = [line for line in child.before.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("-- ")]  # the hint, on stderr
    assert "\x1b[" in child.before  # a coloured header on a terminal
    assert all(len(_visible(line)) <= 60 for line in lines), lines


def _visible(line: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", line)


# -- deleted VMs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def goner(node: Node) -> str:
    """A VM made and deleted (by name)."""
    vm_id = _create(node, "goner")
    node.ok("vm", "delete", "goner", "--wait")
    return vm_id


def test_a_deleted_vm_is_listed_only_when_asked(node: Node, goner: str) -> None:
    assert goner not in [vm["id"] for vm in _json(node, "vm", "list", "--all")["items"]]
    listed = _json(node, "vm", "list", "--deleted", "--name", "goner")["items"]
    assert [(vm["id"], vm["state"]) for vm in listed] == [(goner, "DELETED")]


def test_a_deleted_vm_is_not_found_but_its_tombstone_is_read_by_an_admin(
    node: Node, goner: str
) -> None:
    gone = node.cli("vm", "show", goner)
    assert gone.returncode == 1 and f"VM {goner} not found [not_found]" in gone.stderr
    assert _json(node, "vm", "show", goner, "--deleted")["state"] == "DELETED"  # an admin


def test_a_deleted_vm_is_not_deleted_twice(node: Node, goner: str) -> None:
    again = node.cli("vm", "delete", goner)
    assert again.returncode == 1
    assert again.stderr.strip() == f"cloudcore: VM {goner} is already deleted [already_deleted]"


# -- failures without a trace ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["not a url", "http://127.0.0.1:99999/api/v1", "ftp://x/api"])
def test_a_bad_api_url_is_one_line(node: Node, url: str) -> None:
    result = node.cli("--api", url, "vm", "list")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"cloudcore: the API URL {url!r} is unusable")


def test_a_bad_token_is_reported_before_the_console_prompt(node: Node) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "cloudcore.app.cli", "console"],
        env=node.env(CLOUDCORE_TOKEN="not-a-token"),
        encoding="utf-8",
        timeout=30,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "the API token is unknown, revoked or expired" in child.before
    assert "Traceback" not in child.before and "connected to node" not in child.before


# -- recover, datacenters, templates -----------------------------------------------------------


def test_vm_recover_reaches_the_vm_by_name(node: Node, vms: dict[str, Any]) -> None:
    result = node.cli("vm", "recover", "solo", "retry")
    assert result.returncode == 1
    assert "recover applies to a VM in ERROR" in result.stderr and vms["solo"] in result.stderr


def test_datacenters_are_created_listed_and_shown_by_name(node: Node) -> None:
    made = _json(node, "datacenter", "create", "dc9", "--name", "ninth", "--location", "Oslo")
    assert made["id"] == "dc9"
    assert node.ok("datacenter", "show", "ninth", "-c", "location").stdout.split() == [
        "LOCATION:",
        "Oslo",
    ]
    listed = node.ok("datacenter", "list").stdout.splitlines()
    assert listed[0].split() == ["ID", "NAME", "LOCATION", "BALANCE"]
    assert [line.split()[0] for line in listed[1:3]] == ["dc9", "dc1"]  # the newest first


def test_templates_are_listed_and_a_missing_one_is_one_line(node: Node) -> None:
    listing = _json(node, "template", "list")
    assert listing["items"] == [] and listing["total"] == 0
    missing = node.cli("template", "show", "nothing-here")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "cloudcore: template nothing-here not found [not_found]"


# -- snapshots ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snappy(node: Node) -> str:
    """A VM with two snapshots, one taken running, one stopped (on the demo hosts: libvirt's
    test driver, which snapshots for real, in memory)."""
    vm_id = _create(node, "snappy")
    node.ok("vm", "snapshot", "snappy", "before", "--wait")
    node.ok("vm", "stop", "snappy", "--hard", "--wait")
    node.ok("vm", "snapshot", "snappy", "stopped", "--wait")
    return vm_id


def test_snapshots_are_listed_oldest_first_with_the_power_they_keep(
    node: Node, snappy: str
) -> None:
    taken = _json(node, "vm", "snapshots", "snappy")
    assert [(s["name"], s["power"]) for s in taken] == [
        ("before", "running"),
        ("stopped", "stopped"),
    ]
    table = node.ok("vm", "snapshots", "snappy").stdout.splitlines()
    assert table[0].split() == ["NAME", "CREATED", "POWER"] and table[1].startswith("before")


def test_a_snapshot_is_reverted_to_and_one_deleted(node: Node, snappy: str) -> None:
    reverted = node.ok("vm", "revert", "snappy", "before", "--wait")
    assert reverted.stderr.splitlines()[-1].endswith(f"vm.revert_snapshot vm/{snappy} SUCCEEDED")
    node.ok("vm", "delete-snapshot", "snappy", "stopped", "--wait")
    assert [s["name"] for s in _json(node, "vm", "snapshots", snappy)] == ["before"]


def test_reverting_to_a_snapshot_the_vm_has_not_is_not_found(node: Node, snappy: str) -> None:
    missing = node.cli("vm", "revert", "snappy", "no-such")
    assert missing.returncode == 1
    assert f"VM {snappy} has no snapshot 'no-such' [not_found]" in missing.stderr
