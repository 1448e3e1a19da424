"""VMs through the HTTP API: create (202 and a task), get, list, every action, delete."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.component.gateway.conftest import ApiClient

WEB = {"name": "web", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 256}


async def running_vm(api: ApiClient, who: str = "alice", **fields: Any) -> str:
    r = await api.call("POST", "/vms", who, {**WEB, **fields})
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED", task.error
    return str(r.body["subject"].removeprefix("vm/"))


async def act(api: ApiClient, vm_id: str, action: str, body: Any = None) -> Any:
    r = await api.call("POST", f"/vms/{vm_id}/{action}", "alice", body)
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED", task.error
    return (await api.call("GET", f"/vms/{vm_id}", "alice")).body


async def test_create_answers_202_with_the_task_location_and_the_vm_runs(api: ApiClient) -> None:
    r = await api.call("POST", "/vms", "alice", WEB)
    assert r.status == 202, r.body
    assert r.headers["Location"] == f"/api/v1/tasks/{r.body['id']}"
    assert r.body["kind"] == "vm.deploy" and r.body["state"] in ("RUNNING", "SUCCEEDED")
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED"
    vm_id = r.body["subject"].removeprefix("vm/")
    got = await api.call("GET", f"/vms/{vm_id}", "alice")
    assert got.status == 200 and got.body["state"] == "RUNNING"
    assert got.body["tenant_id"] == "acme" and got.body["power"] == "ON"
    shown = await api.call("GET", f"/tasks/{task.id}", "alice")
    assert shown.body["progress"] == 1.0
    assert [s["name"] for s in shown.body["steps"]] == ["schedule", "define", "start"]


async def test_create_without_start_leaves_the_vm_stopped(api: ApiClient) -> None:
    vm_id = await running_vm(api, start=False)
    assert (await api.call("GET", f"/vms/{vm_id}", "alice")).body["state"] == "STOPPED"


async def test_every_power_action_reaches_its_state(api: ApiClient) -> None:
    vm_id = await running_vm(api)
    assert (await act(api, vm_id, "pause"))["state"] == "PAUSED"
    assert (await act(api, vm_id, "resume"))["state"] == "RUNNING"
    assert (await act(api, vm_id, "reboot", {"hard": False}))["state"] == "RUNNING"
    assert (await act(api, vm_id, "suspend"))["state"] == "SUSPENDED"
    assert (await act(api, vm_id, "resume"))["state"] == "RUNNING"
    assert (await act(api, vm_id, "snapshot", {"name": "before-upgrade"}))["state"] == "RUNNING"
    assert (await act(api, vm_id, "stop", {"timeout": 0.2}))["state"] == "STOPPED"
    resized = await act(api, vm_id, "reconfigure", {"cpus": 2, "memory_mib": 512})
    assert resized["spec"]["cpus"] == 2 and resized["spec"]["memory_mib"] == 512
    assert (await act(api, vm_id, "start"))["state"] == "RUNNING"
    assert (await act(api, vm_id, "stop", {"hard": True}))["state"] == "STOPPED"


async def test_an_illegal_action_is_409_naming_the_state(api: ApiClient) -> None:
    vm_id = await running_vm(api, start=False)
    r = await api.call("POST", f"/vms/{vm_id}/pause", "alice")
    assert r.status == 409 and r.error_code == "illegal_transition"
    assert "STOPPED" in r.body["error"]["message"]
    assert (await api.call("GET", f"/vms/{vm_id}", "alice")).body["state"] == "STOPPED"


async def test_migrate_answers_202_with_the_task_and_the_vm_ends_on_the_other_host(
    api: ApiClient,
) -> None:
    vm_id = await running_vm(api)
    source = (await api.call("GET", f"/vms/{vm_id}", "alice")).body["host_id"]
    r = await api.call("POST", f"/vms/{vm_id}/migrate", "alice", {})
    assert r.status == 202 and r.body["kind"] == "vm.migrate"
    assert (await api.wait_task(r.body["id"])).state == "SUCCEEDED"
    vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
    assert vm["state"] == "RUNNING" and vm["fault"] is None and vm["host_id"] != source


async def test_delete_answers_202_and_the_vm_ends_deleted(api: ApiClient) -> None:
    vm_id = await running_vm(api)
    r = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert r.status == 202 and r.body["kind"] == "vm.delete"
    assert (await api.wait_task(r.body["id"])).state == "SUCCEEDED"
    gone = await api.call("GET", f"/vms/{vm_id}", "alice")
    assert gone.status == 404 and gone.error_code == "not_found"


async def test_a_deleted_vm_is_hidden_read_by_admins_and_not_deleted_twice(
    api: ApiClient,
) -> None:
    vm_id = await running_vm(api, name="tomb")
    r = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert (await api.wait_task(r.body["id"])).state == "SUCCEEDED"
    assert vm_id not in ids_of((await api.call("GET", "/vms", "alice")).body)
    assert vm_id in ids_of((await api.call("GET", "/vms?deleted=true", "alice")).body)
    # only admins and operators read a tombstone; for its tenant it is gone
    assert (await api.call("GET", f"/vms/{vm_id}?deleted=true", "alice")).status == 404
    tomb = await api.call("GET", f"/vms/{vm_id}?deleted=true", "admin")
    assert tomb.status == 200 and tomb.body["state"] == "DELETED"
    again = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert again.status == 409 and again.error_code == "already_deleted"
    assert "already deleted" in again.body["error"]["message"]


async def test_list_filters_and_pages_with_a_cursor(api: ApiClient) -> None:
    ids = [await running_vm(api, start=False, name=f"vm{n}") for n in range(3)]
    first = await api.call("GET", "/vms?limit=2", "alice")
    assert first.status == 200 and len(first.body["items"]) == 2
    second = await api.call("GET", f"/vms?limit=2&cursor={first.body['next_cursor']}", "alice")
    assert [v["id"] for v in first.body["items"] + second.body["items"]] == ids[::-1]  # newest
    assert second.body["next_cursor"] is None
    assert first.body["total"] == second.body["total"] == 3
    by_name = await api.call("GET", "/vms?sort=name:desc", "alice")
    assert [v["name"] for v in by_name.body["items"]] == ["vm2", "vm1", "vm0"]
    named = await api.call("GET", "/vms?name=vm1", "alice")
    assert ids_of(named.body) == [ids[1]]
    bad = await api.call("GET", "/vms?sort=spec", "alice")
    assert bad.status == 422 and bad.body["error"]["details"]["field"] == "sort"
    stopped = await api.call("GET", "/vms?state=STOPPED&datacenter_id=dc1", "alice")
    assert len(stopped.body["items"]) == 3
    assert (await api.call("GET", "/vms?state=RUNNING", "alice")).body["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**WEB, "cpus": 0}, "cpus"),
        ({**WEB, "memory_mib": "lots"}, "memory_mib"),
        ({k: v for k, v in WEB.items() if k != "name"}, "name"),
        ({**WEB, "colour": "blue"}, "colour"),
        ({**WEB, "datacenter_id": "nowhere"}, "datacenter_id"),
    ],
)
async def test_a_bad_create_body_is_422_naming_the_field(
    api: ApiClient, body: dict[str, Any], field: str
) -> None:
    r = await api.call("POST", "/vms", "alice", body)
    assert r.status == 422, r.body
    assert field in r.body["error"]["message"]
    assert (await api.call("GET", "/vms", "alice")).body["items"] == []


async def test_bad_action_bodies_are_422(api: ApiClient) -> None:
    vm_id = await running_vm(api)
    for action, body in [
        ("reconfigure", {}),
        ("reconfigure", {"cpus": -1}),
        ("snapshot", {"name": ""}),
        ("stop", {"timeout": -5}),
    ]:
        r = await api.call("POST", f"/vms/{vm_id}/{action}", "alice", body)
        assert r.status == 422, (action, body, r.body)


async def test_growing_a_vm_counts_against_the_quota_and_shrinking_gives_back(
    api: ApiClient,
) -> None:
    await api.store.set_quota("acme", "cpus", 2)
    vm_id = await running_vm(api, start=False)  # a running VM cannot grow past its maxima
    r = await api.call("POST", f"/vms/{vm_id}/reconfigure", "alice", {"cpus": 3})
    assert r.status == 409 and r.error_code == "quota_exceeded", r.body
    assert "cpus" in r.body["error"]["message"]
    assert (await act(api, vm_id, "reconfigure", {"cpus": 2}))["spec"]["cpus"] == 2
    used = {q.resource: q.used for q in await api.store.get_quotas("acme")}
    assert used["cpus"] == 2
    await act(api, vm_id, "reconfigure", {"cpus": 1})
    used = {q.resource: q.used for q in await api.store.get_quotas("acme")}
    assert used["cpus"] == 1
    r = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    await api.wait_task(r.body["id"])
    used = {q.resource: q.used for q in await api.store.get_quotas("acme")}
    assert used["cpus"] == 0


async def test_recover_verbs_are_for_operators_not_users(api: ApiClient) -> None:
    r = await api.call("POST", "/vms", "alice", WEB)
    await api.wait_task(r.body["id"])
    denied = await api.call("POST", f"/tasks/{r.body['id']}/recover", "alice", {"verb": "succeed"})
    assert denied.status == 403 and denied.error_code == "forbidden"
    allowed = await api.call("POST", f"/tasks/{r.body['id']}/recover", "operator", {"verb": "fail"})
    assert allowed.status == 409 and "ERROR" in allowed.body["error"]["message"]  # VM not in ERROR


def ids_of(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


async def test_task_ids_are_one_format_in_time_order(api: ApiClient) -> None:
    """Deploy and operation tasks alike: ``task-`` and 28 hex digits, so sorting the ids sorts
    the tasks by when they were made, and the newest-first listing agrees."""
    vm_id = await running_vm(api, name="ordered")
    await act(api, vm_id, "stop", {"hard": True})
    await act(api, vm_id, "start")
    listed = await api.call("GET", f"/tasks?subject=vm/{vm_id}", "alice")
    tasks = listed.body["items"]
    assert [t["kind"] for t in tasks] == ["vm.start", "vm.stop", "vm.deploy"]
    assert all(re.fullmatch(r"task-[0-9a-f]{28}", t["id"]) for t in tasks), tasks
    assert [t["id"] for t in tasks] == sorted((t["id"] for t in tasks), reverse=True)


async def test_abort_is_for_operators_and_only_stops_a_migration_in_flight(
    api: ApiClient,
) -> None:
    vm_id = await running_vm(api)
    r = await api.call("POST", f"/vms/{vm_id}/migrate", "alice", {"deadline": 0})
    assert r.status == 422 and "deadline" in r.body["error"]["message"]
    r = await api.call("POST", f"/vms/{vm_id}/migrate", "alice", {"deadline": 30})
    task_id = r.body["id"]
    assert r.status == 202 and r.body["kind"] == "vm.migrate"
    denied = await api.call("POST", f"/tasks/{task_id}/abort", "alice", {})
    assert denied.status == 403 and denied.error_code == "forbidden"
    assert (await api.wait_task(task_id)).state == "SUCCEEDED"  # a simulated move is instant
    ended = await api.call("POST", f"/tasks/{task_id}/abort", "operator", {})
    assert ended.status == 409 and "has ended" in ended.body["error"]["message"]
    listed = await api.call("GET", f"/tasks?subject=vm/{vm_id}", "operator")
    create = listed.body["items"][-1]  # the oldest: the newest come first
    assert create["kind"] == "vm.deploy"
    wrong = await api.call("POST", f"/tasks/{create['id']}/abort", "operator", {"reason": "x"})
    assert wrong.status == 409
    missing = await api.call("POST", "/tasks/task-nope/abort", "operator", {})
    assert missing.status == 404


async def test_ha_is_set_at_create_and_changed_later_by_the_owner(api: ApiClient) -> None:
    vm_id = await running_vm(api, ha=True, ha_priority=7)
    spec = (await api.call("GET", f"/vms/{vm_id}", "alice")).body["spec"]
    assert (spec["ha"], spec["ha_priority"]) == (True, 7)
    r = await api.call("POST", f"/vms/{vm_id}/ha", "alice", {"ha": False})
    assert r.status == 200 and (r.body["spec"]["ha"], r.body["spec"]["ha_priority"]) == (False, 0)
    assert (await api.call("GET", f"/vms/{vm_id}", "alice")).body["spec"]["ha"] is False
    bad = await api.call("POST", f"/vms/{vm_id}/ha", "alice", {"ha": True, "priority": 5000})
    assert bad.status == 422 and "priority" in bad.body["error"]["message"]
    assert (await api.call("POST", f"/vms/{vm_id}/ha", "bob", {"ha": True})).status == 404
