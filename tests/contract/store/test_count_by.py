"""count_by: records counted per value of a filter field, in one grouped query."""

from __future__ import annotations

import pytest

from cloudcore.errors import InvalidRecord
from cloudcore.store.base import Store
from cloudcore.store.records import VM, Host, HostHealth, Tenant, VMState
from tests.contract.store.factory import Factory


async def test_vms_are_counted_by_state_and_absent_states_are_left_out(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    for _ in range(3):
        await make.vm(tenant, dc, state=VMState.RUNNING)
    await make.vm(tenant, dc, state=VMState.STOPPED)
    await make.vm(tenant, dc)

    counts = await store.count_by(VM, "state")

    assert counts == {"RUNNING": 3, "STOPPED": 1, str(VMState.DEFINED): 1}


async def test_hosts_are_counted_by_health(store: Store, make: Factory) -> None:
    dc = await make.datacenter()
    await make.host(dc, health=HostHealth.HEALTHY)
    await make.host(dc, health=HostHealth.HEALTHY)
    await make.host(dc, health=HostHealth.UNREACHABLE)

    assert await store.count_by(Host, "health") == {"HEALTHY": 2, "UNREACHABLE": 1}


async def test_records_without_a_value_are_counted_under_the_empty_key(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    host = await make.host(dc)
    placed = await make.vm(tenant, dc)
    await store.place_vm(placed.id, host.id, expected_version=1)
    await make.vm(tenant, dc)

    assert await store.count_by(VM, "host_id") == {host.id: 1, "": 1}


async def test_an_empty_table_counts_nothing(store: Store) -> None:
    assert await store.count_by(VM, "state") == {}


@pytest.mark.parametrize(
    ("kind", "field"), [(VM, "power"), (VM, "state; DROP TABLE vms"), (Tenant, "id")]
)
async def test_a_field_that_is_not_a_filter_is_refused(
    store: Store, kind: type[VM] | type[Tenant], field: str
) -> None:
    with pytest.raises(InvalidRecord, match="cannot be listed by"):
        await store.count_by(kind, field)
