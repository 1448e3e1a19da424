"""VMs through the HTTP API: create (202 and a task), get, list, act, delete."""

from __future__ import annotations

from tests.integration.gateway.conftest import ApiClient


async def test_create_answers_202_with_the_task_location_and_the_vm_runs(api: ApiClient) -> None:
    r = await api.call(
        "POST",
        "/vms",
        "alice",
        {"name": "web", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 256},
    )
    assert r.status == 202, r.body
    assert r.headers["Location"] == f"/api/v1/tasks/{r.body['id']}"
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED"
    vm_id = r.body["subject"].removeprefix("vm/")
    got = await api.call("GET", f"/vms/{vm_id}", "alice")
    assert got.status == 200 and got.body["state"] == "RUNNING"
    assert got.body["tenant_id"] == "acme"
    shown = await api.call("GET", f"/tasks/{task.id}", "alice")
    assert shown.body["progress"] == 1.0
    assert [s["name"] for s in shown.body["steps"]] == ["schedule", "define", "start"]
