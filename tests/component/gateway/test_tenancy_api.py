"""Tenants, users, tokens and quotas through the HTTP API, and the isolation of tenants: a user
never sees another tenant's resources, not even that they exist."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudcore.store.records import TaskState
from tests.component.gateway.conftest import ApiClient

ROLES = ["admin", "operator", "alice", "bob"]
SMALL_VM = {"datacenter_id": "dc1", "cpus": 1, "memory_mib": 64}


def ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["items"]]


def keys_in(value: Any) -> set[str]:
    """Every key of every object in a decoded JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


# -- tenants ---------------------------------------------------------------------------------


async def test_an_admin_lists_and_creates_tenants(api: ApiClient) -> None:
    listed = await api.call("GET", "/tenants")
    assert listed.status == 200 and {"acme", "globex", "system"} <= set(ids(listed.body))
    r = await api.call("POST", "/tenants", json={"id": "initech", "description": "TPS reports"})
    assert r.status == 201, r.body
    assert (r.body["name"], r.body["description"]) == ("initech", "TPS reports")
    assert r.headers["Location"] == "/api/v1/tenants/initech"
    assert (await api.call("GET", "/tenants/initech", "operator")).status == 200


@pytest.mark.parametrize("who", ["operator", "alice"])
async def test_only_an_admin_lists_or_creates_tenants(api: ApiClient, who: str) -> None:
    assert (await api.call("GET", "/tenants", who)).status == 403
    r = await api.call("POST", "/tenants", who, {"id": "initech"})
    assert r.status == 403 and r.error_code == "forbidden"
    assert (await api.call("GET", "/tenants/initech")).status == 404


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"id": "acme"}, 409, "already_exists"),
        ({"id": "acme2", "name": "acme"}, 409, "already_exists"),
        ({"id": "no spaces"}, 422, "id"),
        ({"name": "x"}, 422, "id"),
        ({"id": "x", "plan": "gold"}, 422, "plan"),
    ],
)
async def test_a_bad_or_taken_tenant_is_refused(
    api: ApiClient, body: dict[str, Any], status: int, text: str
) -> None:
    r = await api.call("POST", "/tenants", json=body)
    assert r.status == status
    assert text in (r.error_code or "") + r.body["error"]["message"]


async def test_a_tenant_body_that_is_not_json_is_400(api: ApiClient) -> None:
    assert (await api.call("POST", "/tenants", data="{not json")).status == 400


async def test_an_unknown_tenant_is_404(api: ApiClient) -> None:
    for path in ("/tenants/nobody", "/tenants/nobody/users", "/tenants/nobody/quotas"):
        r = await api.call("GET", path)
        assert r.status == 404 and r.error_code == "not_found", path


# -- users -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "operator"])
async def test_admins_and_operators_list_a_tenants_users(api: ApiClient, who: str) -> None:
    r = await api.call("GET", "/tenants/acme/users", who)
    assert r.status == 200 and [u["name"] for u in r.body["items"]] == ["alice"]


async def test_users_may_not_list_users_even_their_own_tenants(api: ApiClient) -> None:
    assert (await api.call("GET", "/tenants/acme/users", "alice")).status == 403
    assert (await api.call("GET", "/tenants/acme/users", "bob")).status == 403


async def test_an_admin_creates_a_user_and_issues_it_a_token(api: ApiClient) -> None:
    r = await api.call("POST", "/tenants/acme/users", json={"name": "carol", "role": "OPERATOR"})
    assert r.status == 201, r.body
    assert (r.body["tenant_id"], r.body["role"]) == ("acme", "OPERATOR")
    issued = await api.call("POST", "/tokens", json={"user_id": r.body["id"], "name": "ci"})
    assert issued.status == 201 and issued.body["user_id"] == r.body["id"]
    me = await api.call("GET", "/users/me", issued.body["secret"])
    assert me.status == 200
    assert (me.body["name"], me.body["tenant_id"], me.body["role"]) == ("carol", "acme", "OPERATOR")


@pytest.mark.parametrize(
    ("who", "path", "body", "status"),
    [
        ("operator", "/tenants/acme/users", {"name": "carol"}, 403),
        ("alice", "/tenants/acme/users", {"name": "carol"}, 403),
        ("admin", "/tenants/nobody/users", {"name": "carol"}, 404),
        ("admin", "/tenants/acme/users", {"name": "alice"}, 409),
        ("admin", "/tenants/acme/users", {"name": "carol", "role": "ROOT"}, 422),
        ("admin", "/tenants/acme/users", {"name": ""}, 422),
    ],
)
async def test_a_user_that_may_not_be_created_is_refused(
    api: ApiClient, who: str, path: str, body: dict[str, Any], status: int
) -> None:
    r = await api.call("POST", path, who, body)
    assert r.status == status, r.body
    if status == 422:
        assert next(iter(set(body) - {"name"}), "name") in r.body["error"]["message"]


@pytest.mark.parametrize(
    ("who", "tenant", "role"),
    [
        ("admin", "system", "ADMIN"),
        ("operator", "system", "OPERATOR"),
        ("alice", "acme", "USER"),
        ("bob", "globex", "USER"),
    ],
)
async def test_users_me_says_who_is_calling(
    api: ApiClient, who: str, tenant: str, role: str
) -> None:
    r = await api.call("GET", "/users/me", who)
    assert r.status == 200
    assert (r.body["name"], r.body["tenant_id"], r.body["role"]) == (who, tenant, role)
    assert r.body["user_id"] == api.users[who].id


async def test_users_me_needs_a_token(api: ApiClient) -> None:
    r = await api.call("GET", "/users/me", None)
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


# -- tokens ----------------------------------------------------------------------------------


async def test_a_user_issues_lists_and_revokes_its_own_tokens(api: ApiClient) -> None:
    r = await api.call("POST", "/tokens", "alice", {"name": "laptop"})
    assert r.status == 201, r.body
    assert r.body["secret"].startswith("cc_") and r.body["name"] == "laptop"
    assert r.headers["Location"] == f"/api/v1/tokens/{r.body['id']}"
    secret, token_id = r.body["secret"], r.body["id"]
    assert (await api.call("GET", "/users/me", secret)).body["name"] == "alice"

    listed = await api.call("GET", "/tokens", "alice")
    assert len(listed.body["items"]) == 2 and token_id in ids(listed.body)
    assert {t["user_id"] for t in listed.body["items"]} == {api.users["alice"].id}
    shown = await api.call("GET", f"/tokens/{token_id}", "alice")
    assert shown.status == 200 and "secret" not in shown.body

    gone = await api.call("DELETE", f"/tokens/{token_id}", "alice")
    assert gone.status == 204 and gone.body is None
    refused = await api.call("GET", "/users/me", secret)  # at once: no cache delay
    assert refused.status == 401 and refused.error_code == "unauthorized"
    assert (await api.call("DELETE", f"/tokens/{token_id}", "alice")).status == 404
    assert (await api.call("GET", "/users/me", "alice")).status == 200


async def test_no_reply_ever_carries_a_token_hash(api: ApiClient) -> None:
    issued = await api.call("POST", "/tokens", "alice", {"name": "x"})
    replies = [
        issued,
        await api.call("GET", "/tokens"),
        await api.call("GET", "/tokens", "alice"),
        await api.call("GET", f"/tokens/{issued.body['id']}"),
        await api.call("GET", "/users/me", "alice"),
    ]
    for reply in replies:
        assert reply.status in (200, 201)
        assert not {"token_hash", "hash"} & keys_in(reply.body)


async def test_an_admin_lists_every_token_and_narrows_by_user(api: ApiClient) -> None:
    everyone = await api.call("GET", "/tokens")
    assert {t["user_id"] for t in everyone.body["items"]} >= {u.id for u in api.users.values()}
    bob = api.users["bob"].id
    narrowed = await api.call("GET", f"/tokens?user_id={bob}")
    assert [t["user_id"] for t in narrowed.body["items"]] == [bob]
    assert (await api.call("GET", f"/tokens?user_id={bob}", "alice")).body["items"] == []


@pytest.mark.parametrize(
    ("who", "body", "status", "text"),
    [
        ("alice", {"user_id": "BOB"}, 403, "forbidden"),
        ("operator", {"user_id": "ALICE"}, 403, "forbidden"),
        ("admin", {"user_id": "usr-nobody"}, 422, "user_id"),
        ("alice", {"expires_at": "2001-01-01T00:00:00Z"}, 422, "expires_at"),
        ("alice", {"expires_at": "2999-01-01T00:00:00"}, 422, "expires_at"),
        ("alice", {"scope": "all"}, 422, "scope"),
    ],
)
async def test_a_token_that_may_not_be_issued_is_refused(
    api: ApiClient, who: str, body: dict[str, Any], status: int, text: str
) -> None:
    body = {
        k: api.users[v.lower()].id if k == "user_id" and v.isupper() else v for k, v in body.items()
    }
    r = await api.call("POST", "/tokens", who, body)
    assert r.status == status, r.body
    assert text in (r.error_code or "") + r.body["error"]["message"]


async def test_a_token_with_an_expiry_works_until_then(api: ApiClient) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    r = await api.call("POST", "/tokens", "bob", {"expires_at": soon.isoformat()})
    assert r.status == 201 and datetime.fromisoformat(r.body["expires_at"]) == soon
    assert (await api.call("GET", "/users/me", r.body["secret"])).status == 200


async def test_an_admin_revokes_anyones_token(api: ApiClient) -> None:
    token_id = (await api.call("GET", "/tokens", "bob")).body["items"][0]["id"]
    assert (await api.call("DELETE", f"/tokens/{token_id}", "operator")).status == 404
    assert (await api.call("DELETE", f"/tokens/{token_id}", "admin")).status == 204
    assert (await api.call("GET", "/users/me", "bob")).status == 401


# -- quotas ----------------------------------------------------------------------------------


async def test_an_admin_sets_quotas_that_members_and_operators_read(api: ApiClient) -> None:
    empty = await api.call("GET", "/tenants/acme/quotas", "alice")
    assert empty.status == 200 and empty.body == {"tenant_id": "acme", "items": []}
    r = await api.call("PUT", "/tenants/acme/quotas/cpus", json={"maximum": 8})
    assert r.status == 200 and (r.body["resource"], r.body["maximum"]) == ("cpus", 8)
    r = await api.call("PUT", "/tenants/acme/quotas/cpus", json={"maximum": 4})
    assert r.body["maximum"] == 4
    for who in ("alice", "operator", "admin"):
        got = await api.call("GET", "/tenants/acme/quotas", who)
        assert [(q["resource"], q["maximum"], q["used"]) for q in got.body["items"]] == [
            ("cpus", 4, 0)
        ]


@pytest.mark.parametrize(
    ("who", "path", "body", "status", "text"),
    [
        ("operator", "/tenants/acme/quotas/vms", {"maximum": 1}, 403, "forbidden"),
        ("alice", "/tenants/acme/quotas/vms", {"maximum": 1}, 403, "forbidden"),
        ("admin", "/tenants/nobody/quotas/vms", {"maximum": 1}, 404, "not_found"),
        ("admin", "/tenants/acme/quotas/gpus", {"maximum": 1}, 422, "gpus"),
        ("admin", "/tenants/acme/quotas/vms", {"maximum": -1}, 422, "maximum"),
        ("admin", "/tenants/acme/quotas/vms", {}, 422, "maximum"),
    ],
)
async def test_a_quota_that_may_not_be_set_is_refused(
    api: ApiClient, who: str, path: str, body: dict[str, Any], status: int, text: str
) -> None:
    r = await api.call("PUT", path, who, body)
    assert r.status == status, r.body
    assert text in (r.error_code or "") + r.body["error"]["message"]
    assert (await api.call("GET", "/tenants/acme/quotas")).body["items"] == []


async def test_a_vm_quota_refuses_the_second_vm_until_the_first_is_deleted(
    api: ApiClient,
) -> None:
    assert (await api.call("PUT", "/tenants/acme/quotas/vms", json={"maximum": 1})).status == 200
    first = await api.call("POST", "/vms", "alice", {"name": "one", **SMALL_VM})
    assert first.status == 202
    assert (await api.wait_task(first.body["id"])).state is TaskState.SUCCEEDED

    second = await api.call("POST", "/vms", "alice", {"name": "two", **SMALL_VM})
    assert second.status == 409 and second.error_code == "quota_exceeded"
    assert "vms" in second.body["error"]["message"]
    quotas = (await api.call("GET", "/tenants/acme/quotas", "alice")).body["items"]
    assert [(q["resource"], q["used"]) for q in quotas] == [("vms", 1)]
    other = await api.call("POST", "/vms", "bob", {"name": "two", **SMALL_VM})
    assert other.status == 202  # globex has no quota

    vm_id = first.body["subject"].removeprefix("vm/")
    deleting = await api.call("DELETE", f"/vms/{vm_id}", "alice")
    assert deleting.status == 202
    assert (await api.wait_task(deleting.body["id"])).state is TaskState.SUCCEEDED
    third = await api.call("POST", "/vms", "alice", {"name": "three", **SMALL_VM})
    assert third.status == 202, third.body
    assert (await api.wait_task(third.body["id"])).state is TaskState.SUCCEEDED


# -- tenant isolation ------------------------------------------------------------------------


@dataclass
class Alices:
    """Resources of tenant acme, made by alice."""

    vm_id: str
    task_id: str
    template_id: str
    token_id: str


async def alices_resources(api: ApiClient) -> Alices:
    created = await api.call("POST", "/vms", "alice", {"name": "secret", **SMALL_VM})
    assert created.status == 202
    await api.wait_task(created.body["id"])
    template = await api.call("POST", "/templates", "alice", {"name": "golden"})
    token = await api.call("POST", "/tokens", "alice", {"name": "cli"})
    return Alices(
        vm_id=created.body["subject"].removeprefix("vm/"),
        task_id=created.body["id"],
        template_id=template.body["id"],
        token_id=token.body["id"],
    )


PATHS = {
    "vm": "/vms/{a.vm_id}",
    "task": "/tasks/{a.task_id}",
    "template": "/templates/{a.template_id}",
    "tenant": "/tenants/acme",
    "quotas": "/tenants/acme/quotas",
    "token": "/tokens/{a.token_id}",
}
#: Who sees alice's resources. Tokens are personal: only their user and admins see them.
SEES = {
    "admin": set(PATHS),
    "operator": set(PATHS) - {"token"},
    "alice": set(PATHS),
    "bob": set(),
}


@pytest.mark.parametrize("who", ROLES)
async def test_another_tenants_resources_are_404_to_a_user_and_shown_to_staff(
    api: ApiClient, who: str
) -> None:
    a = await alices_resources(api)
    for resource, template in PATHS.items():
        r = await api.call("GET", template.format(a=a), who)
        expected = 200 if resource in SEES[who] else 404
        assert r.status == expected, (resource, r.body)
        if expected == 404:
            assert r.error_code == "not_found"
            assert r.body["error"]["message"].endswith("not found")


@pytest.mark.parametrize("who", ROLES)
async def test_listings_show_another_tenants_resources_to_staff_only(
    api: ApiClient, who: str
) -> None:
    a = await alices_resources(api)
    listings = {
        "vm": ("/vms", a.vm_id),
        "task": ("/tasks", a.task_id),
        "template": ("/templates", a.template_id),
        "token": ("/tokens", a.token_id),
    }
    for resource, (path, wanted) in listings.items():
        r = await api.call("GET", path, who)
        assert r.status == 200
        assert (wanted in ids(r.body)) == (resource in SEES[who]), resource
    filtered = await api.call("GET", "/vms?tenant_id=acme", who)
    assert (a.vm_id in ids(filtered.body)) == (who != "bob")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/vms/{a.vm_id}/stop", {"hard": True}),
        ("POST", "/vms/{a.vm_id}/reboot", {}),
        ("DELETE", "/vms/{a.vm_id}", None),
        ("POST", "/tasks/{a.task_id}/recover", {"verb": "retry"}),
        ("DELETE", "/templates/{a.template_id}", None),
        ("DELETE", "/tokens/{a.token_id}", None),
        ("GET", "/tenants/acme/quotas", None),
    ],
)
async def test_a_user_cannot_act_on_another_tenants_resources(
    api: ApiClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    a = await alices_resources(api)
    before = await api.call("GET", f"/vms/{a.vm_id}", "alice")
    r = await api.call(method, path.format(a=a), "bob", body)
    assert r.status == 404 and r.error_code == "not_found", r.body
    after = await api.call("GET", f"/vms/{a.vm_id}", "alice")
    assert (after.body["state"], after.body["version"]) == ("RUNNING", before.body["version"])
    tasks = await api.call("GET", "/tasks", "alice")
    assert ids(tasks.body) == [a.task_id]
    assert (await api.call("GET", f"/templates/{a.template_id}", "alice")).status == 200
    assert (await api.call("GET", f"/tokens/{a.token_id}", "alice")).status == 200
