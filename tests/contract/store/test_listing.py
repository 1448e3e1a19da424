"""Listing: cursor pages in id order or sorted by a field either way, filters on indexed fields
(equal, excluded, missing), counts, bad arguments refused."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudcore.errors import InvalidRecord
from cloudcore.store.base import Store
from cloudcore.store.listing import Not, Order
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
        ({"where": {"spec": "x"}}, "cannot be listed by 'spec'"),
        ({"order": Order("spec")}, "cannot be sorted by 'spec'"),
        ({"order": Order("host_id")}, "cannot be sorted by 'host_id'"),
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


_STATES = st.sampled_from([VMState.RUNNING, VMState.STOPPED, VMState.DELETED])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    vms=st.lists(st.tuples(st.sampled_from(["a", "b", "web", "Z"]), _STATES), max_size=12),
    field=st.sampled_from(["id", "name", "state", "created_at"]),
    descending=st.booleans(),
    page=st.integers(1, 5),
    hide_deleted=st.booleans(),
)
async def test_every_sorted_walk_is_the_whole_filtered_set_in_order_and_counted(
    store: Store,
    make: Factory,
    vms: list[tuple[str, VMState]],
    field: str,
    descending: bool,
    page: int,
    hide_deleted: bool,
) -> None:
    """Whatever the order, direction, page size and filters: the pages together are exactly
    the records the filters match, sorted by (field, id) that way, each once, and every page
    says how many match."""
    tenant, dc = await make.tenant(), await make.datacenter()
    made = [await make.vm(tenant, dc, name=name, state=state) for name, state in vms]
    where: dict[str, object] = {"tenant_id": tenant.id}
    if hide_deleted:
        where["state"] = Not(VMState.DELETED)
    wanted = [vm for vm in made if not (hide_deleted and vm.state is VMState.DELETED)]
    expected = [
        vm.id
        for vm in sorted(wanted, key=lambda vm: (getattr(vm, field), vm.id), reverse=descending)
    ]

    seen: list[str] = []
    cursor = None
    while True:
        got = await store.list(
            VM, where=where, after=cursor, limit=page, order=Order(field, descending), count=True
        )
        assert got.total == len(expected)
        seen += [vm.id for vm in got.items]
        if got.next_cursor is None:
            break
        cursor = got.next_cursor
    assert seen == expected


async def test_a_vm_is_found_by_its_name(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    web = await make.vm(tenant, dc, name="web")
    await make.vm(tenant, dc, name="db")
    page = await store.list(VM, where={"name": "web", "tenant_id": tenant.id})
    assert [vm.id for vm in page.items] == [web.id]
