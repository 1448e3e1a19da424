"""Idempotency-Key: the same key from the same user gets the first answer and makes one VM; a
different request under the key is a 409; a create cut off after its commit is answered from
its task. And a create naming a record that does not exist is a 422 naming the field."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import msgspec
import pytest

from cloudcore.errors import BackendUnavailable
from cloudcore.store.records import VM, VMSpec, new_id
from tests.component.gateway.conftest import ApiClient

WEB = {"name": "web", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 256}


async def _vms(api: ApiClient, tenant: str) -> list[VM]:
    return (await api.store.list(VM, where={"tenant_id": tenant}, limit=1000)).items


async def test_the_same_key_twice_creates_one_vm_and_answers_the_same(api: ApiClient) -> None:
    key = {"Idempotency-Key": new_id("k-")}

    first = await api.call("POST", "/vms", "alice", WEB, headers=key)
    again = await api.call("POST", "/vms", "alice", WEB, headers=key)

    assert first.status == again.status == 202
    assert again.body == first.body
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(await _vms(api, "acme")) == 1


async def test_concurrent_requests_with_one_key_create_one_vm(api: ApiClient) -> None:
    key = {"Idempotency-Key": new_id("k-")}

    replies = await asyncio.gather(
        *(api.call("POST", "/vms", "alice", WEB, headers=key) for _ in range(8))
    )

    assert {r.status for r in replies} == {202}
    assert len({r.headers["Location"] for r in replies}) == 1
    assert all(r.body == replies[0].body for r in replies)
    assert len(await _vms(api, "acme")) == 1


async def test_a_different_body_under_the_same_key_is_409_naming_the_key(api: ApiClient) -> None:
    key = new_id("k-")
    await api.call("POST", "/vms", "alice", WEB, headers={"Idempotency-Key": key})

    other = await api.call(
        "POST", "/vms", "alice", {**WEB, "cpus": 2}, headers={"Idempotency-Key": key}
    )

    assert other.status == 409 and other.error_code == "idempotency_key_reused"
    assert key in other.body["error"]["message"]
    assert len(await _vms(api, "acme")) == 1


async def test_keys_are_per_user(api: ApiClient) -> None:
    key = {"Idempotency-Key": new_id("k-")}

    a = await api.call("POST", "/vms", "alice", WEB, headers=key)
    b = await api.call("POST", "/vms", "bob", WEB, headers=key)

    assert a.status == b.status == 202 and a.body["id"] != b.body["id"]


async def test_a_failed_request_does_not_hold_its_key(api: ApiClient) -> None:
    key = {"Idempotency-Key": new_id("k-")}
    await api.store.set_quota("acme", "vms", 0)

    refused = await api.call("POST", "/vms", "alice", WEB, headers=key)
    await api.store.set_quota("acme", "vms", 5)
    retried = await api.call("POST", "/vms", "alice", WEB, headers=key)

    assert refused.status == 409 and refused.error_code == "quota_exceeded"
    assert retried.status == 202 and len(await _vms(api, "acme")) == 1


async def test_a_key_the_store_could_not_release_is_released_soon_after(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store goes away as a create fails: the key is let go once it is back, so the
    client's retry runs at once instead of waiting out the lease (30 s)."""
    key = {"Idempotency-Key": new_id("k-")}
    await api.store.set_quota("acme", "vms", 0)
    release = api.store.release_idempotency_key
    down = [1]

    async def flaky(claim: Any) -> None:
        if down[0]:
            down[0] -= 1
            raise BackendUnavailable("the database system is shutting down")
        await release(claim)

    monkeypatch.setattr(api.store, "release_idempotency_key", flaky)
    refused = await api.call("POST", "/vms", "alice", WEB, headers=key)
    await api.store.set_quota("acme", "vms", 5)
    async with asyncio.timeout(10):
        retried = await api.call("POST", "/vms", "alice", WEB, headers=key)

    assert refused.status == 409 and refused.error_code == "quota_exceeded"
    assert retried.status == 202 and len(await _vms(api, "acme")) == 1
    assert down == [0]


async def test_a_create_whose_answer_was_cut_off_is_answered_from_its_task(
    api: ApiClient,
) -> None:
    # What a crash between the create's commit and its answer leaves: the key with the task.
    user = api.users["alice"]
    body = msgspec.json.encode(WEB)
    fingerprint = hashlib.sha256(b"POST /api/v1/vms\n" + body).hexdigest()
    claim, held = await api.store.claim_idempotency_key(
        user.id, "cut-off", fingerprint, ttl=60, lease=60
    )
    assert held
    task = await api.orchestrator.deploy(
        tenant_id="acme",
        datacenter_id="dc1",
        name="web",
        spec=VMSpec(cpus=1, memory_mib=256),
        claim=claim,
    )

    again = await api.call(
        "POST", "/vms", "alice", data=body, headers={"Idempotency-Key": "cut-off"}
    )

    assert again.status == 202 and again.body["id"] == task.id
    assert again.headers["Location"] == f"/api/v1/tasks/{task.id}"
    assert len(await _vms(api, "acme")) == 1


async def test_actions_take_a_key_too(api: ApiClient) -> None:
    created = await api.call("POST", "/vms", "alice", {**WEB, "start": False})
    await api.wait_task(created.body["id"])
    vm_id = created.body["subject"].removeprefix("vm/")
    key = {"Idempotency-Key": new_id("k-")}

    first = await api.call("POST", f"/vms/{vm_id}/start", "alice", headers=key)
    await api.wait_task(first.body["id"])
    again = await api.call("POST", f"/vms/{vm_id}/start", "alice", headers=key)

    assert first.status == again.status == 202 and again.body == first.body


async def test_an_unknown_tenant_on_create_is_422_naming_tenant_id(api: ApiClient) -> None:
    r = await api.call("POST", "/vms", "admin", {**WEB, "tenant_id": "no-such-tenant"})

    assert r.status == 422, r.body
    assert "tenant_id" in r.body["error"]["message"]
    assert "FOREIGN KEY" not in r.body["error"]["message"]


async def test_an_unknown_datacenter_on_create_is_422_naming_datacenter_id(
    api: ApiClient,
) -> None:
    r = await api.call("POST", "/vms", "alice", {**WEB, "datacenter_id": "nowhere"})

    assert r.status == 422 and "datacenter_id" in r.body["error"]["message"]


async def test_a_retry_while_the_first_answer_is_still_on_its_way_gets_its_task(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first attempt committed its create, then is slow to answer (an overloaded node): a
    # client that timed out and retried gets the task at once, not a 409 after the lease.
    committed, answer = asyncio.Event(), asyncio.Event()
    deploy = api.orchestrator.deploy

    async def slow(*args: Any, **kwargs: Any) -> Any:
        task = await deploy(*args, **kwargs)
        committed.set()
        await answer.wait()
        return task

    monkeypatch.setattr(api.orchestrator, "deploy", slow)
    key = {"Idempotency-Key": new_id("k-")}
    first = asyncio.create_task(api.call("POST", "/vms", "alice", WEB, headers=key))
    await committed.wait()

    again = await asyncio.wait_for(api.call("POST", "/vms", "alice", WEB, headers=key), 10)
    answer.set()

    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == (await first).headers["Location"]
    assert len(await _vms(api, "acme")) == 1
