"""Datacenters, hosts and templates through the HTTP API: who may see and change them, what
each bad request is answered with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudcore.store.records import TaskState
from hypervisor_drivers.libvirt import write_simulated_host
from tests.component.gateway.conftest import ApiClient
from tests.waiting import eventually

ROLES = ["admin", "operator", "alice", "bob"]


def ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["items"]]


# -- datacenters -----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ROLES)
async def test_every_role_lists_and_reads_datacenters(api: ApiClient, who: str) -> None:
    listed = await api.call("GET", "/datacenters", who)
    assert listed.status == 200 and ids(listed.body) == ["dc1"]
    got = await api.call("GET", "/datacenters/dc1", who)
    assert got.status == 200 and got.body["name"] == "dc1"


async def test_a_datacenter_needs_a_token_and_an_existing_id(api: ApiClient) -> None:
    assert (await api.call("GET", "/datacenters", None)).status == 401
    assert (await api.call("GET", "/datacenters", "cc_not-a-token")).status == 401
    missing = await api.call("GET", "/datacenters/nowhere")
    assert missing.status == 404 and missing.error_code == "not_found"


async def test_an_admin_registers_a_datacenter_that_runs_at_once(api: ApiClient) -> None:
    r = await api.call(
        "POST", "/datacenters", json={"id": "dc2", "name": "second", "location": "Oslo"}
    )
    assert r.status == 201, r.body
    assert r.body["location"] == "Oslo" and r.body["version"] == 1
    assert r.headers["Location"] == "/api/v1/datacenters/dc2"
    assert api.system.lookup("/user/dc/dc2") is not None
    assert ids((await api.call("GET", "/datacenters", "bob")).body) == ["dc2", "dc1"]  # newest
    by_name = await api.call("GET", "/datacenters?name=second", "bob")
    assert ids(by_name.body) == ["dc2"] and by_name.body["total"] == 1


@pytest.mark.parametrize("who", ["operator", "alice"])
async def test_only_an_admin_registers_a_datacenter(api: ApiClient, who: str) -> None:
    r = await api.call("POST", "/datacenters", who, {"id": "dc2", "name": "dc2"})
    assert r.status == 403 and r.error_code == "forbidden"
    assert (await api.call("GET", "/datacenters/dc2")).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "id"),
        ({"id": "dc2"}, "name"),
        ({"id": "bad id!", "name": "x"}, "id"),
        ({"id": "dc2", "name": "x", "floor": 3}, "floor"),
    ],
)
async def test_a_bad_datacenter_is_422_naming_the_field(
    api: ApiClient, body: dict[str, Any], field: str
) -> None:
    r = await api.call("POST", "/datacenters", json=body)
    assert r.status == 422 and field in r.body["error"]["message"]


async def test_a_datacenter_body_that_is_not_json_is_400(api: ApiClient) -> None:
    r = await api.call("POST", "/datacenters", data="{not json")
    assert r.status == 400 and r.error_code == "bad_request"


@pytest.mark.parametrize("body", [{"id": "dc1", "name": "other"}, {"id": "dc2", "name": "dc1"}])
async def test_a_datacenter_id_or_name_taken_is_409(api: ApiClient, body: dict[str, str]) -> None:
    r = await api.call("POST", "/datacenters", json=body)
    assert r.status == 409 and r.error_code == "already_exists"


# -- hosts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "operator"])
async def test_admins_and_operators_list_hosts_with_filters_and_pages(
    api: ApiClient, who: str
) -> None:
    listed = await api.call("GET", "/hosts?datacenter_id=dc1&health=HEALTHY&sort=name", who)
    assert listed.status == 200 and ids(listed.body) == ["dc1-h1", "dc1-h2"]
    assert ids((await api.call("GET", "/hosts?admin_state=DISABLED", who)).body) == []
    first = await api.call("GET", "/hosts?limit=1&sort=id:desc", who)
    assert ids(first.body) == ["dc1-h2"] and first.body["next_cursor"]
    assert first.body["total"] == 2
    second = await api.call(
        "GET", f"/hosts?limit=1&sort=id:desc&cursor={first.body['next_cursor']}", who
    )
    assert ids(second.body) == ["dc1-h1"] and second.body["next_cursor"] is None
    got = await api.call("GET", "/hosts/dc1-h2", who)
    assert got.status == 200 and got.body["health"] == "HEALTHY"


@pytest.mark.parametrize(
    ("query", "name"), [("health=BOGUS", "health"), ("limit=0", "limit"), ("rack=3", "rack")]
)
async def test_a_bad_host_query_is_422_naming_the_parameter(
    api: ApiClient, query: str, name: str
) -> None:
    r = await api.call("GET", f"/hosts?{query}")
    assert r.status == 422 and name in r.body["error"]["message"]


@pytest.mark.parametrize("who", ["alice", "bob"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/hosts"),
        ("GET", "/hosts/dc1-h1"),
        ("POST", "/hosts"),
        ("POST", "/hosts/dc1-h1/enable"),
        ("POST", "/hosts/dc1-h1/disable"),
        ("POST", "/hosts/dc1-h1/maintenance"),
        ("POST", "/hosts/dc1-h1/maintenance/cancel"),
    ],
)
async def test_users_get_403_on_every_host_endpoint(
    api: ApiClient, who: str, method: str, path: str
) -> None:
    body = {
        "id": "h9",
        "datacenter_id": "dc1",
        "hypervisor": "libvirt",
        "cpus": 1,
        "memory_mib": 64,
    }
    r = await api.call(method, path, who, body if path == "/hosts" else None)
    assert r.status == 403 and r.error_code == "forbidden"
    assert (await api.call("GET", "/hosts/dc1-h1")).body["admin_state"] == "ENABLED"


@pytest.mark.parametrize(
    "path",
    [
        "/hosts/nope",
        "/hosts/nope/enable",
        "/hosts/nope/disable",
        "/hosts/nope/maintenance",
        "/hosts/nope/maintenance/cancel",
    ],
)
async def test_an_unknown_host_is_404(api: ApiClient, path: str) -> None:
    r = await api.call("POST" if path.count("/") >= 3 else "GET", path, "operator")
    assert r.status == 404 and r.error_code == "not_found"


async def test_a_host_registered_in_a_new_datacenter_takes_a_vm(
    api: ApiClient, tmp_path: Path
) -> None:
    assert (await api.call("POST", "/datacenters", json={"id": "dc2", "name": "dc2"})).status == 201
    uri = write_simulated_host(tmp_path / "new.xml", cpus=2, memory_kib=2048 * 1024)
    r = await api.call(
        "POST",
        "/hosts",
        "operator",
        {
            "id": "dc2-h1",
            "datacenter_id": "dc2",
            "name": "rack 1",
            "hypervisor": "libvirt",
            "address": uri,
            "cpus": 2,
            "memory_mib": 2048,
            "capabilities": {"gpu": "none", "physical_cpus": "99"},
        },
    )
    assert r.status == 201, r.body
    assert r.headers["Location"] == "/api/v1/hosts/dc2-h1"
    assert (r.body["name"], r.body["cpus"], r.body["memory_mib"]) == ("rack 1", 8, 2048)
    assert r.body["capabilities"] == {
        "gpu": "none",
        "physical_cpus": "2",
        "physical_memory_mib": "2048",
    }

    async def healthy() -> bool:
        return (await api.call("GET", "/hosts/dc2-h1")).body["health"] == "HEALTHY"

    await eventually(healthy, timeout=10)
    vm = await api.call(
        "POST", "/vms", "alice", {"name": "v", "datacenter_id": "dc2", "cpus": 1, "memory_mib": 64}
    )
    assert (await api.wait_task(vm.body["id"])).state is TaskState.SUCCEEDED
    shown = await api.call("GET", f"/vms/{vm.body['subject'].removeprefix('vm/')}", "alice")
    assert shown.body["host_id"] == "dc2-h1"


@pytest.mark.parametrize(
    ("change", "status", "text"),
    [
        ({"id": "dc1-h1"}, 409, "already_exists"),
        ({"datacenter_id": "nowhere"}, 422, "datacenter_id"),
        ({"cpus": 0}, 422, "cpus"),
        ({"memory_mib": "lots"}, 422, "memory_mib"),
        ({"hypervisor": None}, 422, "hypervisor"),
    ],
)
async def test_a_bad_host_registration_is_refused(
    api: ApiClient, change: dict[str, Any], status: int, text: str
) -> None:
    body = {
        "id": "h9",
        "datacenter_id": "dc1",
        "hypervisor": "libvirt",
        "address": "test:///default",
        "cpus": 2,
        "memory_mib": 1024,
        **change,
    }
    r = await api.call("POST", "/hosts", json=body)
    assert r.status == status, r.body
    assert text in (r.error_code or "") + r.body["error"]["message"]
    assert (await api.call("GET", "/hosts/h9")).status == 404


async def test_admin_states_are_stored_and_steer_the_scheduler(api: ApiClient) -> None:
    for host in ("dc1-h1", "dc1-h2"):
        r = await api.call("POST", f"/hosts/{host}/disable", "operator")
        assert r.status == 200 and r.body["admin_state"] == "DISABLED"
    listed = await api.call("GET", "/hosts?admin_state=DISABLED")
    assert sorted(ids(listed.body)) == ["dc1-h1", "dc1-h2"]
    spec = {"datacenter_id": "dc1", "cpus": 1, "memory_mib": 64}
    refused = await api.call("POST", "/vms", "alice", {"name": "a", **spec})
    assert (await api.wait_task(refused.body["id"])).state is TaskState.FAILED

    r = await api.call("POST", "/hosts/dc1-h1/maintenance")  # from DISABLED: drains, empty
    assert r.status == 202 and r.body["kind"] == "host.maintenance"
    assert (await api.wait_task(r.body["id"])).state is TaskState.SUCCEEDED
    assert (await api.call("GET", "/hosts/dc1-h1")).body["admin_state"] == "MAINTENANCE"
    r = await api.call("POST", "/hosts/dc1-h1/disable")
    assert (
        r.status == 409 and "allowed now: enable, cancel_maintenance" in r.body["error"]["message"]
    )
    r = await api.call("POST", "/hosts/dc1-h2/enable")
    assert r.status == 200 and r.body["admin_state"] == "ENABLED"
    placed = await api.call("POST", "/vms", "alice", {"name": "b", **spec})
    assert (await api.wait_task(placed.body["id"])).state is TaskState.SUCCEEDED
    vm = await api.call("GET", f"/vms/{placed.body['subject'].removeprefix('vm/')}", "alice")
    assert vm.body["host_id"] == "dc1-h2"


# -- templates -------------------------------------------------------------------------------


async def make_template(api: ApiClient, who: str, name: str, **extra: Any) -> dict[str, Any]:
    r = await api.call("POST", "/templates", who, {"name": name, **extra})
    assert r.status == 201, r.body
    return dict(r.body)


async def test_users_create_their_tenants_templates_and_admins_public_ones(
    api: ApiClient,
) -> None:
    mine = await make_template(api, "alice", "debian", os_type="linux", datacenter_id="dc1")
    assert mine["tenant_id"] == "acme" and mine["datacenter_id"] == "dc1"
    public = await make_template(api, "admin", "ubuntu", tenant_id=None)
    assert public["tenant_id"] is None
    for_acme = await make_template(api, "operator", "alpine", tenant_id="acme")
    assert for_acme["tenant_id"] == "acme"
    got = await api.call("GET", f"/templates/{public['id']}", "bob")
    assert got.status == 200 and got.body["name"] == "ubuntu"


@pytest.mark.parametrize(
    ("who", "tenant_id"), [("alice", None), ("operator", None), ("alice", "globex")]
)
async def test_who_may_not_create_a_template_gets_403(
    api: ApiClient, who: str, tenant_id: str | None
) -> None:
    r = await api.call("POST", "/templates", who, {"name": "t", "tenant_id": tenant_id})
    assert r.status == 403 and r.error_code == "forbidden"
    assert (await api.call("GET", "/templates")).body["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "t", "datacenter_id": "nowhere"}, "datacenter_id"),
        ({"name": "t", "tenant_id": "nobody"}, "tenant_id"),
        ({"name": "t", "size_gib": -1}, "size_gib"),
    ],
)
async def test_a_bad_template_is_422_naming_the_field(
    api: ApiClient, body: dict[str, Any], field: str
) -> None:
    r = await api.call("POST", "/templates", "admin", body)
    assert r.status == 422 and field in r.body["error"]["message"]


async def test_a_user_pages_through_its_tenants_and_the_public_templates(api: ApiClient) -> None:
    made = [
        await make_template(api, "alice", "a1"),
        await make_template(api, "admin", "p1", tenant_id=None),
        await make_template(api, "bob", "b1"),
        await make_template(api, "alice", "a2"),
        await make_template(api, "admin", "p2", tenant_id=None),
        await make_template(api, "alice", "a3"),
    ]
    names = {t["id"]: t["name"] for t in made}
    for limit in (1, 2, 3, 100):
        seen: list[str] = []
        path = f"/templates?limit={limit}"
        while True:
            page = await api.call("GET", path, "alice")
            assert page.status == 200 and len(page.body["items"]) <= limit
            seen += [names[i] for i in ids(page.body)]
            if page.body["next_cursor"] is None:
                break
            path = f"/templates?limit={limit}&cursor={page.body['next_cursor']}"
        assert seen == ["a3", "p2", "a2", "p1", "a1"], limit  # the newest first
    bobs = await api.call("GET", "/templates?sort=created_at:asc", "bob")
    assert [names[i] for i in ids(bobs.body)] == ["p1", "b1", "p2"]
    assert bobs.body["total"] == 3
    assert len((await api.call("GET", "/templates", "operator")).body["items"]) == 6
    bad = await api.call("GET", "/templates?cursor=garb%40ge", "alice")  # @: not base64url
    assert bad.status == 422 and "cursor" in bad.body["error"]["message"]


async def test_templates_are_deleted_by_their_tenant_or_an_admin(api: ApiClient) -> None:
    mine = await make_template(api, "alice", "debian")
    public = await make_template(api, "admin", "ubuntu", tenant_id=None)
    assert (await api.call("DELETE", f"/templates/{mine['id']}", "bob")).status == 404
    assert (await api.call("DELETE", f"/templates/{mine['id']}", "operator")).status == 403
    assert (await api.call("DELETE", f"/templates/{public['id']}", "alice")).status == 403
    r = await api.call("DELETE", f"/templates/{mine['id']}", "alice")
    assert r.status == 204 and r.body is None
    assert (await api.call("GET", f"/templates/{mine['id']}", "alice")).status == 404
    assert (await api.call("DELETE", f"/templates/{mine['id']}", "alice")).status == 404
    assert (await api.call("DELETE", f"/templates/{public['id']}", "admin")).status == 204
    assert (await api.call("GET", "/templates")).body["items"] == []


async def test_a_balance_plan_is_shown_to_operators_and_moves_nothing(api: ApiClient) -> None:
    r = await api.call("GET", "/datacenters/dc1/balance?policy=consolidate", "operator")
    assert r.status == 200 and r.body["policy"] == "consolidate"
    assert r.body["hosts"] == 2 and r.body["moves"] == [] and r.body["explanation"]
    assert sorted(r.body["standby"]) == ["dc1-h1", "dc1-h2"]  # both empty
    bad = await api.call("GET", "/datacenters/dc1/balance?policy=sideways", "operator")
    assert bad.status == 422 and "policy" in bad.body["error"]["message"]
    assert (await api.call("GET", "/datacenters/dc1/balance", "alice")).status == 403
    assert (await api.call("GET", "/datacenters/nope/balance", "operator")).status == 404
    ran = await api.call("POST", "/datacenters/dc1/balance", "operator", {"policy": "spread"})
    assert ran.status == 202 and ran.body["task_ids"] == []


async def test_a_datacenter_balance_policy_is_set_by_operators_and_checked(
    api: ApiClient,
) -> None:
    assert (await api.call("GET", "/datacenters/dc1", "operator")).body["balance_policy"] == "off"
    path = "/datacenters/dc1/balance/policy"
    r = await api.call("PUT", path, "operator", {"policy": "consolidate"})
    assert r.status == 200 and r.body["balance_policy"] == "consolidate"
    assert (await api.call("GET", "/datacenters/dc1", "alice")).body["balance_policy"] == (
        "consolidate"
    )
    bad = await api.call("PUT", path, "operator", {"policy": "sideways"})
    assert bad.status == 422 and "policy" in bad.body["error"]["message"]
    assert (await api.call("PUT", path, "alice", {"policy": "off"})).status == 403
    gone = await api.call("PUT", "/datacenters/nope/balance/policy", "operator", {"policy": "off"})
    assert gone.status == 404
