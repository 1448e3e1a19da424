"""Networks and public addresses through the HTTP API: who may create what, validation naming
the field, tenancy, taking and giving back public addresses under the quota."""

from __future__ import annotations

from typing import Any

import pytest

from cloudcore.store.records import VM, VMSpec, new_id
from tests.component.gateway.conftest import ApiClient

PRIVATE = {"name": "acme-lan", "datacenter_id": "dc1", "cidr": "10.20.0.0/24"}
PUBLIC = {
    "name": "internet",
    "datacenter_id": "dc1",
    "cidr": "192.0.2.0/29",
    "gateway": "192.0.2.1",
    "tenant_id": None,
    "quarantine_s": 3600,
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cidr": "10.20.0.1/24"}, "cidr"),
        ({"cidr": "banana"}, "cidr"),
        ({"gateway": "10.99.0.1"}, "gateway"),
        ({"ranges": [{"first": "10.20.0.50", "last": "10.20.0.10"}]}, "ranges[0]"),
        (
            {
                "ranges": [
                    {"first": "10.20.0.10", "last": "10.20.0.50"},
                    {"first": "10.20.0.50", "last": "10.20.0.60"},
                ]
            },
            "ranges[1]",
        ),
        ({"kind": "vlan", "vlan": 5000}, "vlan"),
        ({"datacenter_id": "nowhere"}, "datacenter_id"),
    ],
)
async def test_a_bad_network_is_a_422_naming_the_field(
    api: ApiClient, change: dict[str, Any], field: str
) -> None:
    r = await api.call("POST", "/networks", "alice", {**PRIVATE, **change})
    assert (r.status, r.error_code) == (422, "invalid_value"), r.body
    assert r.body["error"]["details"]["field"] == field


async def test_tenants_make_private_networks_and_only_admins_public_ones(api: ApiClient) -> None:
    assert (await api.call("POST", "/networks", "alice", PUBLIC)).status == 403
    public = await api.call("POST", "/networks", "admin", PUBLIC)
    assert public.status == 201 and public.body["tenant_id"] is None
    mine = await api.call("POST", "/networks", "alice", PRIVATE)
    assert mine.status == 201 and mine.body["tenant_id"] == "acme"
    assert mine.headers["Location"] == f"/api/v1/networks/{mine.body['id']}"
    overlap = await api.call("POST", "/networks", "bob", {**PRIVATE, "name": "globex-lan"})
    assert overlap.status == 422 and mine.body["id"] in overlap.body["error"]["message"]

    listed = await api.call("GET", "/networks", "bob")
    assert [n["id"] for n in listed.body["items"]] == [public.body["id"]]
    assert (await api.call("GET", f"/networks/{mine.body['id']}", "bob")).status == 404
    both = await api.call("GET", "/networks?datacenter_id=dc1", "alice")
    assert {n["id"] for n in both.body["items"]} == {public.body["id"], mine.body["id"]}
    assert (await api.call("DELETE", f"/networks/{public.body['id']}", "alice")).status == 403
    assert (await api.call("DELETE", f"/networks/{mine.body['id']}", "alice")).status == 204


async def test_public_addresses_are_taken_and_given_back_under_the_quota(api: ApiClient) -> None:
    net = (await api.call("POST", "/networks", "admin", PUBLIC)).body
    r = await api.call("PUT", "/tenants/acme/quotas/public_ips", "admin", {"maximum": 2})
    assert r.status == 200, r.body
    fixed = {"network_id": net["id"], "address": "192.0.2.5"}
    assert (await api.call("POST", "/public-ips", "alice", fixed)).status == 201
    first = await api.call("POST", "/public-ips", "alice", {"network_id": net["id"]})
    assert first.status == 201 and first.body["tenant_id"] == "acme"
    over = await api.call("POST", "/public-ips", "alice", {"network_id": net["id"]})
    assert (over.status, over.error_code) == (409, "quota_exceeded")
    taken = await api.call("POST", "/public-ips", "bob", fixed)
    assert (taken.status, taken.error_code) == (409, "already_exists")
    assert "tenant acme" in taken.body["error"]["message"]
    gateway = await api.call("POST", "/public-ips", "bob", {**fixed, "address": "192.0.2.1"})
    assert gateway.status == 422 and gateway.body["error"]["details"]["field"] == "address"

    mine = await api.call("GET", "/public-ips", "alice")
    assert sorted(a["address"] for a in mine.body) == sorted([first.body["address"], "192.0.2.5"])
    assert (await api.call("GET", "/public-ips", "bob")).body == []
    seen = await api.call("GET", f"/networks/{net['id']}/addresses", "bob")
    assert seen.body == []  # another tenant's public addresses are not shown

    path = f"/public-ips/{net['id']}/192.0.2.5"
    assert (await api.call("DELETE", path, "bob")).status == 404
    assert (await api.call("DELETE", path, "alice")).status == 204
    assert (await api.call("DELETE", path, "alice")).status == 404
    resting = await api.call("POST", "/public-ips", "bob", fixed)
    assert (resting.status, resting.error_code) == (409, "conflict")  # in quarantine
    busy = await api.call("DELETE", f"/networks/{net['id']}", "admin")
    assert busy.status == 409 and "tenant acme" in busy.body["error"]["message"]


async def test_exhausting_a_network_is_a_409(api: ApiClient) -> None:
    small = {**PUBLIC, "cidr": "198.51.100.0/30", "gateway": None}
    net = await api.call("POST", "/networks", "admin", small)
    assert net.status == 201, net.body
    body = {"network_id": net.body["id"]}
    assert (await api.call("POST", "/public-ips", "bob", body)).status == 201
    # a /30 has two host addresses
    assert (await api.call("POST", "/public-ips", "bob", body)).status == 201
    full = await api.call("POST", "/public-ips", "bob", body)
    assert (full.status, full.error_code) == (409, "addresses_exhausted")


async def test_a_vm_gets_nics_with_macs_of_the_prefix_and_addresses_of_its_networks(
    api: ApiClient,
) -> None:
    vm = await api.store.create(
        VM(
            id=new_id(uuid=True),
            tenant_id="acme",
            datacenter_id="dc1",
            name="web",
            spec=VMSpec(cpus=1, memory_mib=256),
        )
    )
    lan = (await api.call("POST", "/networks", "alice", PRIVATE)).body
    theirs = (await api.call("POST", "/networks", "bob", {**PRIVATE, "cidr": "10.30.0.0/24"})).body
    path = f"/vms/{vm.id}/nics"

    nic = await api.call("POST", path, "alice", {"network_id": lan["id"], "address": "10.20.0.7"})
    assert nic.status == 201, nic.body
    assert nic.body["address"] == "10.20.0.7" and nic.body["mac"].startswith("52:54:00:")
    other = await api.call("POST", path, "alice", {"network_id": lan["id"]})
    assert other.status == 201 and other.body["mac"] != nic.body["mac"]
    refused = await api.call("POST", path, "alice", {"network_id": theirs["id"]})
    assert refused.status == 422 and refused.body["error"]["details"]["field"] == "network_id"
    assert (await api.call("GET", path, "bob")).status == 404

    listed = await api.call("GET", path, "alice")
    assert sorted(n["mac"] for n in listed.body) == sorted([nic.body["mac"], other.body["mac"]])

    assert (await api.call("DELETE", f"{path}/{nic.body['mac']}", "alice")).status == 204
    assert [n["mac"] for n in (await api.call("GET", path, "alice")).body] == [other.body["mac"]]
    assert (await api.call("DELETE", f"{path}/{nic.body['mac']}", "alice")).status == 404


async def test_a_vm_created_with_nics_holds_their_addresses_until_it_is_deleted(
    api: ApiClient,
) -> None:
    lan = (await api.call("POST", "/networks", "alice", PRIVATE)).body
    theirs = (await api.call("POST", "/networks", "bob", {**PRIVATE, "cidr": "10.30.0.0/24"})).body
    web = {"name": "web", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 256}
    nics = [{"network_id": lan["id"], "address": "10.20.0.9"}, {"network_id": lan["id"]}]

    r = await api.call("POST", "/vms", "alice", {**web, "nics": nics})
    assert r.status == 202, r.body
    vm_id = r.body["subject"].removeprefix("vm/")
    held = (await api.call("GET", f"/vms/{vm_id}/nics", "alice")).body
    assert len(held) == 2 and "10.20.0.9" in {n["address"] for n in held}
    assert all(n["mac"].startswith("52:54:00:") for n in held)
    assert (await api.wait_task(r.body["id"])).state == "SUCCEEDED"
    vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
    plugged = await api.drivers[vm["host_id"]].list_nics(vm_id)  # the NICs the driver defined
    assert [n.mac for n in plugged] == [
        n["mac"] for n in sorted(held, key=lambda n: n["created_at"])
    ]
    assert {n.source for n in plugged} == {lan["name"]}  # the network has no bridge: its name

    taken = await api.call("POST", "/vms", "alice", {**web, "nics": nics[:1]})
    assert (taken.status, taken.error_code) == (409, "already_exists"), taken.body
    assert f"VM {vm_id}" in taken.body["error"]["message"]
    refused = await api.call(
        "POST", "/vms", "alice", {**web, "nics": [*nics[1:], {"network_id": theirs["id"]}]}
    )
    assert refused.status == 422, refused.body
    assert refused.body["error"]["details"]["field"] == "nics[1].network_id"
    vms = (await api.call("GET", "/vms", "alice")).body["items"]
    assert [v["id"] for v in vms] == [vm_id]  # the refused creates stored nothing

    deleted = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert deleted.status == 202, deleted.body
    assert (await api.wait_task(deleted.body["id"])).state == "SUCCEEDED"
    assert (await api.call("GET", f"/networks/{lan['id']}/addresses", "alice")).body == []


async def test_a_public_address_is_attached_to_a_vm_as_a_nic_and_detached(api: ApiClient) -> None:
    net = (await api.call("POST", "/networks", "admin", PUBLIC)).body
    web = {"name": "web", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 256}
    created = await api.call("POST", "/vms", "alice", web)
    vm_id = created.body["subject"].removeprefix("vm/")
    theirs = await api.call("POST", "/vms", "bob", web)
    their_vm = theirs.body["subject"].removeprefix("vm/")
    taken = (await api.call("POST", "/public-ips", "alice", {"network_id": net["id"]})).body
    path = f"/public-ips/{net['id']}/{taken['address']}"

    refused = await api.call("POST", f"{path}/attach", "alice", {"vm_id": their_vm})
    assert refused.status == 422 and refused.body["error"]["details"]["field"] == "vm_id"
    assert (await api.call("POST", f"{path}/attach", "bob", {"vm_id": their_vm})).status == 404
    attached = await api.call("POST", f"{path}/attach", "alice", {"vm_id": vm_id})
    assert attached.status == 200, attached.body
    assert attached.body["vm_id"] == vm_id and attached.body["mac"].startswith("52:54:00:")
    nics = (await api.call("GET", f"/vms/{vm_id}/nics", "alice")).body
    assert [n["address"] for n in nics] == [taken["address"]]
    busy = await api.call("DELETE", path, "alice")
    assert busy.status == 409 and vm_id in busy.body["error"]["message"]

    detached = await api.call("POST", f"{path}/detach", "alice")
    assert detached.status == 200 and detached.body["vm_id"] is None
    assert (await api.call("GET", f"/vms/{vm_id}/nics", "alice")).body == []
    assert (await api.call("DELETE", path, "alice")).status == 204
