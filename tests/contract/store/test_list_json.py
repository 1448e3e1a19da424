"""list_json: the same pages as list, each record as the JSON msgspec makes of it — key for
key, value for value and in the same order (PostgreSQL builds it in SQL; SQLite encodes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec

from cloudcore.store.base import Store
from cloudcore.store.listing import Not, Order
from cloudcore.store.records import (
    VM,
    Host,
    NicRequest,
    Record,
    Task,
    TaskState,
    VMSpec,
    VMState,
)
from tests.contract.store.factory import Factory


def _shape(raw: bytes) -> Any:
    """The JSON with every object as its (key, value) pairs in order: whitespace aside, two
    texts of one shape read the same."""
    return json.loads(raw, object_pairs_hook=list)


async def _same_pages(store: Store, kind: type[Record], **listing: Any) -> int:
    cursor, seen = None, 0
    while True:
        page = await store.list(kind, after=cursor, limit=3, count=True, **listing)
        raw = await store.list_json(kind, after=cursor, limit=3, count=True, **listing)
        assert [_shape(bytes(item)) for item in raw.items] == [
            _shape(msgspec.json.encode(item)) for item in page.items
        ]
        assert (raw.next_cursor, raw.total) == (page.next_cursor, page.total)
        seen += len(page.items)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_vms_read_as_json_are_the_records_json(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    host = await make.host(dc, capabilities={"zone": "b", "arch": "x86_64"})
    network = await make.network(dc)
    await make.vm(tenant, dc)
    full = VMSpec(
        cpus=2,
        memory_mib=1024,
        disk_gib=20,
        template_id="tpl-1",
        network_ids=(network.id,),
        nics=(NicRequest(network_id=network.id), NicRequest(network_id=network.id, address="x")),
        extra={"zz": "1", "a": "2", "middle-key": 'quote " and \\ é'},
        max_cpus=4,
        ha=True,
        ha_priority=7,
    )
    vm = await make.vm(tenant, dc, spec=full, state=VMState.RUNNING, fault="line\nbreak \x01")
    await store.place_vm(vm.id, host.id, expected_version=1)
    observed = await make.vm(tenant, dc)
    for when in (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, 120)):
        current = await store.get(VM, observed.id)
        await store.update(
            VM,
            observed.id,
            expected_version=current.version,
            observed_at=when.replace(tzinfo=UTC),
        )
        assert await _same_pages(store, VM) == 3
    # A spec written before its later fields existed reads with their defaults.
    old = await make.vm(tenant, dc)
    async with store._writer() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            "UPDATE vms SET spec = $1 WHERE id = $2", '{"memory_mib": 64, "cpus": 1}', old.id
        )
    assert (await store.get(VM, old.id)).spec.max_cpus is None
    assert await _same_pages(store, VM) == 4
    assert await _same_pages(store, VM, order=Order("created_at", descending=True)) == 4
    assert await _same_pages(store, VM, order=Order("name"), where={"state": Not("DELETED")}) == 4
    assert await _same_pages(store, VM, where={"tenant_id": tenant.id, "host_id": None}) == 3


async def test_hosts_and_tasks_read_as_json_are_the_records_json(
    store: Store, make: Factory
) -> None:
    dc = await make.datacenter()
    for _ in range(2):
        await make.host(dc, capabilities={"b": "1", "a": "2"})
    await make.task(data={"z": 1, "a": [1, "two", None], "nested": {"k": True}})
    await make.task(state=TaskState.PENDING)
    assert await _same_pages(store, Host) == 2
    assert await _same_pages(store, Task, order=Order("created_at", descending=True)) == 2
