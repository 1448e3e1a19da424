"""A VM that boots from a volume, through the HTTP API: the deploy attaches the volume to the
VM before it starts (on libvirt's test driver the attach is simulated: ``simulated:sda``), with
boot order 1 in the domain; the VM's delete detaches it and keeps or deletes it by its
``delete_on_termination``; a volume that cannot be booted from is refused before anything is
written, naming what is wrong (404, 422, 409)."""

from __future__ import annotations

from typing import Any

from cloudcore.store.records import (
    VM,
    BootVolume,
    Datacenter,
    Task,
    TaskState,
    VMSpec,
    VMState,
    Volume,
    VolumeState,
)
from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_vms_api import WEB, running_vm
from tests.component.gateway.test_volumes_api import act, get, volume


def _booting(volume_id: str, **flags: Any) -> dict[str, Any]:
    return {**WEB, "name": "from-volume", "boot_volume": {"volume_id": volume_id, **flags}}


async def _vms(api: ApiClient) -> list[VM]:
    return [vm for vm in (await api.store.list(VM, limit=100)).items]


async def test_a_vm_boots_from_its_volume_and_its_delete_keeps_it(api: ApiClient) -> None:
    vol = await volume(api)
    vm_id = await running_vm(api, **_booting(vol))

    got = await get(api, vol)
    assert (got["state"], got["vm_id"], got["device"]) == ("ATTACHED", vm_id, "simulated:sda")
    vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
    assert vm["state"] == "RUNNING"
    assert vm["spec"]["boot_volume"] == {"volume_id": vol, "delete_on_termination": False}
    assert vm["task_id"] is None  # the deploy ended
    tasks = (await api.store.list(Task, where={"subject": f"vm/{vm_id}"})).items
    steps = [s.name for s in await api.store.list_steps(tasks[0].id)]
    assert steps.index("define") < steps.index("boot_volume") < steps.index("start"), steps

    # The volume is the VM's while it lives: not a second VM's boot volume, not deletable.
    r = await api.call("POST", "/vms", "alice", {**_booting(vol), "name": "second"})
    assert r.status == 409 and "ATTACHED to VM" in r.body["error"]["message"], r.body
    assert (await api.call("DELETE", f"/volumes/{vol}", "alice")).status == 409
    r = await api.call("POST", f"/volumes/{vol}/detach", "alice")
    assert r.status == 409, r.body
    assert f"it is the boot volume of VM {vm_id} (RUNNING)" in r.body["error"]["message"]

    await act(api, f"/vms/{vm_id}", method="DELETE")
    got = await get(api, vol)
    assert (got["state"], got["vm_id"], got["device"]) == ("AVAILABLE", None, None)
    assert (await api.store.get(VM, vm_id)).state is VMState.DELETED
    assert await api.orchestrator.storage.reconcile() == []  # type: ignore[union-attr]


async def test_a_vm_deleted_with_delete_on_termination_deletes_its_boot_volume(
    api: ApiClient,
) -> None:
    vol = await volume(api)
    vm_id = await running_vm(api, **_booting(vol, delete_on_termination=True))
    assert (await get(api, vol))["state"] == "ATTACHED"
    task = await act(api, f"/vms/{vm_id}", method="DELETE")
    steps = [s.name for s in await api.store.list_steps(task.id)]
    assert steps == ["volumes", "detach_volume", "delete_volume", "delete"]
    assert (await api.call("GET", f"/volumes/{vol}", "alice")).status == 404
    assert (await api.store.get(Volume, vol)).state is VolumeState.DELETED


async def test_a_stopped_vm_from_a_volume_starts_from_it(api: ApiClient) -> None:
    vol = await volume(api)
    r = await api.call("POST", "/vms", "alice", {**_booting(vol), "start": False})
    assert r.status == 202, r.body
    assert (await api.wait_task(r.body["id"])).state == "SUCCEEDED"
    vm_id = str(r.body["subject"]).removeprefix("vm/")
    assert (await api.store.get(VM, vm_id)).state is VMState.STOPPED
    assert (await get(api, vol))["vm_id"] == vm_id
    r = await api.call("POST", f"/vms/{vm_id}/start", "alice")
    assert r.status == 202 and (await api.wait_task(r.body["id"])).state == "SUCCEEDED"


async def test_a_volume_that_cannot_boot_a_vm_is_refused_before_anything_is_written(
    api: ApiClient,
) -> None:
    await api.store.create(Datacenter(id="dc2", name="dc2"))
    mine, bobs = await volume(api), await volume(api, "bob")
    attached, elsewhere = await volume(api), await volume(api)
    await act(api, f"/volumes/{attached}/attach", {"vm_id": await running_vm(api)})
    before = len(await _vms(api))
    cases: list[tuple[dict[str, Any], int, str]] = [
        (_booting("vol-nowhere"), 404, "boot_volume.volume_id: no volume 'vol-nowhere'"),
        (_booting(bobs), 404, f"boot_volume.volume_id: no volume '{bobs}'"),
        (
            {**_booting(elsewhere), "datacenter_id": "dc2"},
            422,
            f"volume {elsewhere} is in datacenter dc1, the VM in dc2",
        ),
        (_booting(attached), 409, f"volume {attached} is ATTACHED to VM"),
        (
            {**_booting(mine), "template_id": "tpl-x"},
            422,
            "boot_volume: a VM boots from a template or from a volume, not both",
        ),
        ({**WEB, "boot_volume": {"volume_id": mine, "size": 3}}, 422, "size"),
        ({**WEB, "boot_volume": {}}, 422, "volume_id"),
    ]
    for body, status, message in cases:
        r = await api.call("POST", "/vms", "alice", body)
        assert r.status == status, (body, r.body)
        assert message in str(r.body["error"]), (message, r.body)
    assert len(await _vms(api)) == before  # nothing written
    assert (await get(api, mine))["state"] == "AVAILABLE"
    assert (await get(api, bobs, "bob"))["state"] == "AVAILABLE"


async def test_a_boot_volume_taken_before_the_deploy_attaches_it_fails_the_deploy_naming_it(
    api: ApiClient,
) -> None:
    """Checked at the request, the volume may still be attached elsewhere before the deploy
    gets to it: the deploy's attach is refused, the define rolled back and retried, and the
    VM ends in ERROR naming the volume and its holder, which keeps it."""
    vol, holder = await volume(api), await running_vm(api)
    await act(api, f"/volumes/{vol}/attach", {"vm_id": holder})
    task = await api.orchestrator.deploy(
        tenant_id="acme",
        datacenter_id="dc1",
        name="late",
        spec=VMSpec(cpus=1, memory_mib=64, boot_volume=BootVolume(volume_id=vol)),
    )
    done = await api.orchestrator.wait(task.id, 30)
    assert done.state is TaskState.FAILED
    assert f"boot volume {vol} of VM" in str(done.error) and f"ATTACHED to VM {holder}" in str(
        done.error
    )
    vm = await api.store.get(VM, task.subject.removeprefix("vm/"))
    assert vm.state is VMState.ERROR and vol in str(vm.fault)
    got = await get(api, vol)
    assert (got["state"], got["vm_id"]) == ("ATTACHED", holder)


async def test_the_openapi_document_describes_the_boot_volume(api: ApiClient) -> None:
    schemas = (await api.call("GET", "/openapi.json", None)).body["components"]["schemas"]
    assert "boot_volume" in schemas["VMCreate"]["properties"]
    body = schemas["BootVolumeBody"]
    assert body["required"] == ["volume_id"]
    assert set(body["properties"]) == {"volume_id", "delete_on_termination"}
