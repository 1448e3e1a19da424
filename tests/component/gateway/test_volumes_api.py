"""Volumes through the HTTP API: create, get, list, extend, attach, detach, snapshots, delete;
every error status, tenant isolation, quotas, bad input, Idempotency-Key, and storage pools
for admins. The demo datacenter's pool is the simulated storage driver and the hosts libvirt's
test driver, whose attach is simulated (devices named ``simulated:sdX``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_vms_api import running_vm

DATA = {"name": "data", "datacenter_id": "dc1", "size_gib": 10}


async def volume(api: ApiClient, who: str = "alice", **fields: Any) -> str:
    r = await api.call("POST", "/volumes", who, {**DATA, **fields})
    assert r.status == 202, r.body
    assert r.headers["Location"] == f"/api/v1/tasks/{r.body['id']}"
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED", task.error
    return str(r.body["subject"].removeprefix("volume/"))


async def act(api: ApiClient, path: str, body: Any = None, method: str = "POST") -> Any:
    r = await api.call(method, path, "alice", body)
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"])
    assert task.state == "SUCCEEDED", task.error
    return task


async def get(api: ApiClient, volume_id: str, who: str = "alice") -> Any:
    r = await api.call("GET", f"/volumes/{volume_id}", who)
    assert r.status == 200, r.body
    return r.body


async def test_a_volume_lives_through_every_operation(api: ApiClient) -> None:
    vm_id = await running_vm(api)
    vol = await volume(api)
    assert (await get(api, vol))["state"] == "AVAILABLE"

    await act(api, f"/volumes/{vol}/attach", {"vm_id": vm_id})
    got = await get(api, vol)
    assert (got["state"], got["vm_id"], got["device"]) == ("ATTACHED", vm_id, "simulated:sda")
    assert "chap" not in str(got).lower() and "secret" not in str(got).lower()

    await act(api, f"/volumes/{vol}/extend", {"size_gib": 20})
    assert (await get(api, vol))["size_gib"] == 20

    task = await act(api, f"/volumes/{vol}/snapshots", {"name": "nightly"})
    snaps = (await api.call("GET", f"/volumes/{vol}/snapshots", "alice")).body["items"]
    assert [(s["id"], s["name"], s["state"]) for s in snaps] == [
        (task.data["params"]["snapshot_id"], "nightly", "AVAILABLE")
    ]
    await act(api, f"/volumes/{vol}/snapshots/{snaps[0]['id']}", method="DELETE")

    await act(api, f"/volumes/{vol}/detach")
    assert (await get(api, vol))["state"] == "AVAILABLE"
    await act(api, f"/volumes/{vol}", method="DELETE")
    assert (await api.call("GET", f"/volumes/{vol}", "alice")).status == 404
    listed = (await api.call("GET", "/volumes", "alice")).body["items"]
    assert vol not in [v["id"] for v in listed]


async def test_illegal_operations_are_409_naming_state_and_allowed(api: ApiClient) -> None:
    vm_id = await running_vm(api)
    vol = await volume(api)
    r = await api.call("POST", f"/volumes/{vol}/detach", "alice")
    assert r.status == 409 and r.error_code == "illegal_transition"
    assert "it is AVAILABLE; allowed now: attach, extend" in r.body["error"]["message"]
    await act(api, f"/volumes/{vol}/attach", {"vm_id": vm_id})
    twice = await api.call("POST", f"/volumes/{vol}/attach", "alice", {"vm_id": vm_id})
    assert twice.status == 409 and "it is ATTACHED" in twice.body["error"]["message"]
    r = await api.call("DELETE", f"/volumes/{vol}", "alice")
    assert r.status == 409 and "allowed now: detach" in r.body["error"]["message"]
    r = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert r.status == 409 and "detach them first" in r.body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DATA, "size_gib": 0}, "size_gib"),
        ({**DATA, "size_gib": 10**9}, "size_gib"),
        ({**DATA, "size_gib": "ten"}, "size_gib"),
        ({k: v for k, v in DATA.items() if k != "name"}, "name"),
        ({**DATA, "datacenter_id": "nowhere"}, "datacenter_id"),
        ({**DATA, "tier": "gold"}, "tier"),
        ({**DATA, "colour": "red"}, "colour"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    api: ApiClient, body: dict[str, Any], field: str
) -> None:
    r = await api.call("POST", "/volumes", "alice", body)
    assert r.status == 422, r.body
    assert field in str(r.body["error"])
    assert (await api.call("GET", "/volumes", "alice")).body["items"] == []


async def test_bad_operation_input_is_422(api: ApiClient) -> None:
    vol = await volume(api)
    for path, body, field in (
        ("extend", {"size_gib": 5}, "size_gib"),  # volumes only grow
        ("extend", {"size_gib": 0}, "size_gib"),
        ("attach", {"vm_id": "vm-unknown"}, "vm_id"),
        ("attach", {}, "vm_id"),
    ):
        r = await api.call("POST", f"/volumes/{vol}/{path}", "alice", body)
        assert r.status == 422 and field in str(r.body["error"]), (path, body, r.body)
    assert (await get(api, vol))["state"] == "AVAILABLE"


async def test_another_tenants_volume_and_vm_are_not_found(api: ApiClient) -> None:
    vol = await volume(api, "alice")
    bobs_vm = await running_vm(api, "bob")
    for method, path, body in (
        ("GET", f"/volumes/{vol}", None),
        ("DELETE", f"/volumes/{vol}", None),
        ("POST", f"/volumes/{vol}/extend", {"size_gib": 50}),
        ("POST", f"/volumes/{vol}/attach", {"vm_id": bobs_vm}),
        ("GET", f"/volumes/{vol}/snapshots", None),
    ):
        r = await api.call(method, path, "bob", body)
        assert r.status == 404, (method, path, r.body)
    assert (await api.call("GET", "/volumes", "bob")).body["items"] == []
    # Alice cannot attach her volume to Bob's VM: to her it does not exist.
    r = await api.call("POST", f"/volumes/{vol}/attach", "alice", {"vm_id": bobs_vm})
    assert r.status == 422 and "vm_id" in r.body["error"]["message"]
    assert (await get(api, vol, "admin"))["size_gib"] == 10


async def test_quotas_are_taken_at_create_and_extend_and_given_back(api: ApiClient) -> None:
    store = api.store
    await store.set_quota("acme", "volumes", 2)
    await store.set_quota("acme", "volume_gib", 30)
    vol = await volume(api, size_gib=20)
    r = await api.call("POST", "/volumes", "alice", {**DATA, "size_gib": 11})
    assert r.status == 409 and r.error_code == "quota_exceeded" and "volume_gib" in str(r.body)
    r = await api.call("POST", f"/volumes/{vol}/extend", "alice", {"size_gib": 31})
    assert r.status == 409 and r.error_code == "quota_exceeded"
    assert (await get(api, vol))["state"] == "AVAILABLE"
    await act(api, f"/volumes/{vol}", method="DELETE")
    used = {q.resource: q.used for q in await store.get_quotas("acme")}
    assert used == {"volumes": 0, "volume_gib": 0}


async def test_an_idempotent_create_makes_one_volume(api: ApiClient) -> None:
    key = {"Idempotency-Key": "vol-create-1"}
    first = await api.call("POST", "/volumes", "alice", DATA, headers=key)
    again = await api.call("POST", "/volumes", "alice", DATA, headers=key)
    assert first.status == again.status == 202
    assert first.body["id"] == again.body["id"]
    await api.wait_task(first.body["id"])
    assert len((await api.call("GET", "/volumes", "alice")).body["items"]) == 1


async def test_storage_pools_are_for_admins_and_operators(api: ApiClient) -> None:
    await volume(api, size_gib=3)
    assert (await api.call("GET", "/storage-pools", "alice")).status == 403
    r = await api.call("GET", "/storage-pools", "operator")
    assert r.status == 200
    (pool,) = r.body
    assert (pool["id"], pool["tier"], pool["driver"], pool["committed_mib"]) == (
        "dc1-pool",
        "standard",
        "simulated",
        3 * 1024,
    )
    drift = await api.call("GET", "/storage-pools/drift", "admin")
    assert (drift.status, drift.body) == (200, [])
    assert (await api.call("GET", "/storage-pools/drift", "bob")).status == 403


async def test_volumes_from_a_snapshot_and_clones(api: ApiClient) -> None:
    vol = await volume(api, size_gib=4)
    task = await act(api, f"/volumes/{vol}/snapshots", {"name": "s"})
    snap = task.data["params"]["snapshot_id"]

    from_snap = await volume(api, snapshot_id=snap, size_gib=None)
    clone = await volume(api, source_volume_id=vol, size_gib=6)

    assert (await get(api, from_snap))["size_gib"] == 4  # the snapshot's size by default
    assert (await get(api, clone))["size_gib"] == 6
    assert {(await get(api, v))["pool_id"] for v in (vol, from_snap, clone)} == {"dc1-pool"}
    for body, field in (
        ({**DATA, "snapshot_id": snap, "size_gib": 2}, "size_gib"),
        ({**DATA, "snapshot_id": snap, "source_volume_id": vol}, "source_volume_id"),
        ({**DATA, "snapshot_id": "snap-nope"}, "snapshot_id"),
        ({"name": "x", "datacenter_id": "dc1"}, "size_gib"),
    ):
        r = await api.call("POST", "/volumes", "alice", body)
        assert r.status == 422 and field in r.body["error"]["message"], (body, r.body)
    # Bob cannot copy Alice's data: to him her snapshot and volume do not exist.
    for body, field in (
        ({**DATA, "snapshot_id": snap}, "snapshot_id"),
        ({**DATA, "source_volume_id": vol}, "source_volume_id"),
    ):
        r = await api.call("POST", "/volumes", "bob", body)
        assert r.status == 422 and field in r.body["error"]["message"], (body, r.body)


async def test_the_operator_tree_shows_pools_and_their_volume_actors(api: ApiClient) -> None:
    vol = await volume(api)
    r = await api.call("GET", "/system/tree?path=/user/storage", "operator")
    assert r.status == 200, r.body
    (pool,) = r.body["children"]
    assert (pool["name"], pool["class_name"]) == ("dc1-pool", "StoragePoolActor")
    assert [(c["name"], c["class_name"]) for c in pool["children"]] == [(vol, "VolumeActor")]
