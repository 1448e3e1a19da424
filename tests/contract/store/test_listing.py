"""Listing: cursor pages in id order, filters on indexed fields, bad arguments refused."""

from __future__ import annotations

import pytest

from cloudcore.errors import InvalidRecord
from cloudcore.store.base import Store
from cloudcore.store.records import VM, VMState
from tests.contract.store.factory import Factory


async def test_pages_walk_a_filtered_listing_in_id_order_without_gap_or_repeat(
    store: Store, make: Factory
) -> None:
    dc = await make.datacenter()
    mine, other = await make.tenant(), await make.tenant()
    expected = sorted([(await make.vm(mine, dc)).id for _ in range(23)])
    for _ in range(5):
        await make.vm(other, dc)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list(VM, where={"tenant_id": mine.id}, after=cursor, limit=10)
        pages += 1
        seen += [vm.id for vm in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert seen == expected
    assert pages == 3


async def test_a_page_that_ends_exactly_at_the_last_record_has_no_next_cursor(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    for _ in range(4):
        await make.vm(tenant, dc)
    page = await store.list(VM, limit=4)
    assert len(page.items) == 4
    assert page.next_cursor is None


async def test_filters_combine_and_none_matches_a_missing_value(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    host = await make.host(dc)
    placed = await make.vm(tenant, dc)
    placed, _ = await store.place_vm(placed.id, host.id, expected_version=1)
    running = await make.vm(tenant, dc, state=VMState.RUNNING)
    defined = await make.vm(tenant, dc)

    unplaced = await store.list(VM, where={"host_id": None})
    assert {vm.id for vm in unplaced.items} == {running.id, defined.id}
    on_host = await store.list(VM, where={"host_id": host.id, "datacenter_id": dc.id})
    assert [vm.id for vm in on_host.items] == [placed.id]
    by_state = await store.list(VM, where={"state": VMState.RUNNING, "tenant_id": tenant.id})
    assert [vm.id for vm in by_state.items] == [running.id]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"where": {"name": "x"}}, "cannot be listed by 'name'"),
        ({"after": "%%%"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
    ],
)
async def test_bad_listing_arguments_are_refused(
    store: Store, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRecord, match=message):
        await store.list(VM, **kwargs)  # type: ignore[arg-type]
