"""Operations that would fail as tasks on a healthy VM are refused before any task: a live
reconfigure past the VM's maxima (which a create can now set), and a duplicate snapshot name."""

from __future__ import annotations

from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_vms_api import WEB, act, running_vm


async def tasks_of(api: ApiClient, vm_id: str) -> list[str]:
    r = await api.call("GET", f"/tasks?subject=vm/{vm_id}")
    return [t["kind"] for t in r.body["items"]]


async def test_a_vm_is_created_with_its_maxima_and_grows_live_up_to_them(
    api: ApiClient,
) -> None:
    vm_id = await running_vm(api, cpus=1, memory_mib=256, max_cpus=4, max_memory_mib=1024)
    vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
    assert vm["spec"]["max_cpus"] == 4 and vm["spec"]["max_memory_mib"] == 1024
    driver = api.drivers[vm["host_id"]]
    info = await driver.get_vm(vm_id)
    assert info.vcpus == 1
    grown = await act(api, vm_id, "reconfigure", {"cpus": 4, "memory_mib": 1024})
    assert grown["state"] == "RUNNING" and grown["spec"]["cpus"] == 4


async def test_a_live_reconfigure_past_the_maxima_is_409_naming_the_limit_and_no_task(
    api: ApiClient,
) -> None:
    vm_id = await running_vm(api, cpus=1, memory_mib=256, max_cpus=2)
    before = await tasks_of(api, vm_id)
    r = await api.call("POST", f"/vms/{vm_id}/reconfigure", "alice", {"cpus": 3})
    assert r.status == 409, r.body
    assert "max_cpus=2" in r.body["error"]["message"]
    r = await api.call("POST", f"/vms/{vm_id}/reconfigure", "alice", {"memory_mib": 512})
    assert r.status == 409 and "max_memory_mib=256" in r.body["error"]["message"], r.body
    assert await tasks_of(api, vm_id) == before
    vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
    assert vm["state"] == "RUNNING" and vm["fault"] is None and vm["spec"]["cpus"] == 1


async def test_maxima_below_the_size_are_422_naming_the_field(api: ApiClient) -> None:
    for field, value in (("max_cpus", 1), ("max_memory_mib", 128)):
        body = {**WEB, "cpus": 2, "memory_mib": 256, field: value}
        r = await api.call("POST", "/vms", "alice", body)
        message = r.body["error"]["message"]
        assert r.status == 422 and field in message and "below" in message, r.body


async def test_a_duplicate_snapshot_name_is_409_naming_it_and_no_task(api: ApiClient) -> None:
    vm_id = await running_vm(api)
    await act(api, vm_id, "snapshot", {"name": "before-upgrade"})
    before = await tasks_of(api, vm_id)
    r = await api.call("POST", f"/vms/{vm_id}/snapshot", "alice", {"name": "before-upgrade"})
    assert r.status == 409 and "before-upgrade" in r.body["error"]["message"], r.body
    assert await tasks_of(api, vm_id) == before
    vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
    assert vm["state"] == "RUNNING" and vm["fault"] is None
