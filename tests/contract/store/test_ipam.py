"""IPAM on both stores: networks checked when created, addresses taken and given back, the
quarantine, MACs, the public_ips quota, and many concurrent takers never holding one address
twice."""

from __future__ import annotations

import asyncio
import ipaddress
import re

import pytest

from cloudcore.errors import (
    AddressesExhausted,
    AlreadyExists,
    Conflict,
    InvalidRecord,
    NotFound,
    QuotaExceeded,
)
from cloudcore.store.base import Store
from cloudcore.store.records import (
    AddressRange,
    Datacenter,
    Network,
    NetworkKind,
    OutboxEvent,
    VMState,
    new_id,
)
from tests.contract.store.factory import Factory


def _net(dc: Datacenter, cidr: str = "10.1.0.0/24", **fields: object) -> Network:
    values: dict[str, object] = {"name": f"net-{new_id()}", "gateway": None, "quarantine_s": 0}
    values.update(fields)
    return Network(id=new_id("net-"), datacenter_id=dc.id, cidr=cidr, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cidr": "10.1.0.1/24"}, "cidr"),
        ({"cidr": "not-a-cidr"}, "cidr"),
        ({"gateway": "10.2.0.1"}, "gateway"),
        ({"gateway": "10.1.0.255"}, "gateway"),
        ({"ranges": (AddressRange(first="10.1.0.10", last="10.1.0.5"),)}, "ranges[0]"),
        ({"ranges": (AddressRange(first="10.1.0.10", last="10.1.1.5"),)}, "ranges[0].last"),
        (
            {
                "ranges": (
                    AddressRange(first="10.1.0.10", last="10.1.0.50"),
                    AddressRange(first="10.1.0.40", last="10.1.0.60"),
                )
            },
            "ranges[1]",
        ),
        ({"kind": NetworkKind.VLAN}, "vlan"),
        ({"kind": NetworkKind.VLAN, "vlan": 0}, "vlan"),
        ({"vlan": 12}, "vlan"),
        ({"dns": ("8.8.8.x",)}, "dns[0]"),
        ({"excluded": ("10.9.9.9",)}, "excluded[0]"),
    ],
)
async def test_a_bad_network_is_refused_naming_the_field(
    store: Store, make: Factory, fields: dict[str, object], field: str
) -> None:
    dc = await make.datacenter()
    with pytest.raises(InvalidRecord, match=f"^{re.escape(field)}:"):
        await store.create_network(_net(dc, **fields))
    assert (await store.list(Network, where={"datacenter_id": dc.id})).items == []


async def test_overlapping_cidrs_in_a_datacenter_are_refused_but_not_across(
    store: Store, make: Factory
) -> None:
    dc, other = await make.datacenter(), await make.datacenter()
    first = await store.create_network(_net(dc, "10.1.0.0/16"))
    with pytest.raises(InvalidRecord, match=rf"^cidr: .*{first.id}"):
        await store.create_network(_net(dc, "10.1.4.0/24"))
    await store.create_network(_net(other, "10.1.4.0/24"))
    await store.create_network(_net(dc, "fd00::/64"))
    with pytest.raises(AlreadyExists, match=r"^name:"):
        await store.create_network(_net(dc, "10.2.0.0/24", name=first.name))


async def test_a_network_in_use_is_not_deleted(store: Store, make: Factory) -> None:
    net = await store.create_network(_net(await make.datacenter()))
    held = await store.allocate_ip(net.id, vm_id="vm-1")
    with pytest.raises(Conflict, match="VM vm-1"):
        await store.delete_network(net.id)
    await store.release_ip(net.id, held.address)
    await store.delete_network(net.id)
    with pytest.raises(NotFound):
        await store.get(Network, net.id)


async def test_addresses_come_from_the_ranges_never_the_gateway_or_excluded(
    store: Store, make: Factory
) -> None:
    net = await store.create_network(
        _net(
            await make.datacenter(),
            gateway="10.1.0.1",
            ranges=(AddressRange(first="10.1.0.1", last="10.1.0.6"),),
            excluded=("10.1.0.3",),
        )
    )
    got = {(await store.allocate_ip(net.id, vm_id=f"vm-{i}")).address for i in range(4)}
    assert got == {"10.1.0.2", "10.1.0.4", "10.1.0.5", "10.1.0.6"}
    with pytest.raises(AddressesExhausted):
        await store.allocate_ip(net.id, vm_id="vm-x")
    for wrong in ("10.1.0.1", "10.1.0.3", "10.1.0.7", "10.2.0.2"):
        with pytest.raises(InvalidRecord, match=r"^address:"):
            await store.allocate_ip(net.id, wrong)


async def test_a_specific_address_taken_names_its_holder(store: Store, make: Factory) -> None:
    net = await store.create_network(_net(await make.datacenter()))
    await store.allocate_ip(net.id, "10.1.0.9", vm_id="vm-holder")
    with pytest.raises(AlreadyExists, match="vm-holder"):
        await store.allocate_ip(net.id, "10.1.0.9", vm_id="vm-2")


async def test_a_released_address_rests_in_quarantine(store: Store, make: Factory) -> None:
    dc = await make.datacenter()
    resting = await store.create_network(
        _net(dc, "10.3.0.0/30", quarantine_s=3600)  # two host addresses
    )
    first = await store.allocate_ip(resting.id, vm_id="vm-1")
    await store.release_ip(resting.id, first.address)
    with pytest.raises(Conflict, match="quarantine"):
        await store.allocate_ip(resting.id, first.address)
    second = await store.allocate_ip(resting.id, vm_id="vm-2")
    assert second.address != first.address
    with pytest.raises(AddressesExhausted):
        await store.allocate_ip(resting.id, vm_id="vm-3")

    rested = await store.create_network(_net(dc, "10.4.0.0/30", quarantine_s=0))
    a = await store.allocate_ip(rested.id, "10.4.0.1", vm_id="vm-1")
    await store.release_ip(rested.id, a.address)
    again = await store.allocate_ip(rested.id, "10.4.0.1", vm_id="vm-9")
    assert again.vm_id == "vm-9"
    assert [x.address for x in await store.list_ips(rested.id, released=True)] == ["10.4.0.1"]


async def test_deleting_a_vm_releases_all_its_addresses(store: Store, make: Factory) -> None:
    dc = await make.datacenter()
    a = await store.create_network(_net(dc, "10.5.0.0/24"))
    b = await store.create_network(_net(dc, "fd05::/120"))
    await store.allocate_ip(a.id, vm_id="vm-1")
    six = await store.allocate_ip(b.id, vm_id="vm-1")
    assert ipaddress.ip_address(six.address) in ipaddress.ip_network("fd05::/120")
    await store.allocate_ip(a.id, vm_id="vm-2")
    released = await store.release_vm_ips("vm-1")
    assert {r.network_id for r in released} == {a.id, b.id}
    assert all(r.released_at is not None for r in released)
    assert [x.vm_id for x in await store.list_ips(a.id)] == ["vm-2"]
    assert await store.list_ips(vm_id="vm-1") == []


async def test_nics_get_unique_macs_from_the_prefix(store: Store, make: Factory) -> None:
    net = await store.create_network(_net(await make.datacenter(), "10.6.0.0/24"))
    held = [await store.allocate_ip(net.id, vm_id="vm", mac_prefix="52:54:00") for _ in range(40)]
    macs = [h.mac for h in held]
    assert all(m is not None and m.startswith("52:54:00:") and len(m) == 17 for m in macs)
    assert len(set(macs)) == 40
    with pytest.raises(AlreadyExists, match=r"^mac:"):
        await store.allocate_ip(net.id, vm_id="vm", mac=macs[0])
    with pytest.raises(InvalidRecord, match="mac_prefix"):
        await store.allocate_ip(net.id, vm_id="vm", mac_prefix="53:00")  # multicast


async def test_public_addresses_count_against_the_tenants_quota(
    store: Store, make: Factory
) -> None:
    tenant = await make.tenant()
    dc = await make.datacenter()
    public = await store.create_network(_net(dc, "192.0.2.0/24"))
    private = await store.create_network(_net(dc, "10.7.0.0/24", tenant_id=tenant.id))
    await store.set_quota(tenant.id, "public_ips", 2)
    taken = [await store.allocate_ip(public.id, tenant_id=tenant.id) for _ in range(2)]
    with pytest.raises(QuotaExceeded):
        await store.allocate_ip(public.id, tenant_id=tenant.id)
    assert len(await store.list_ips(public.id)) == 2  # the refused one left nothing
    await store.allocate_ip(private.id, tenant_id=tenant.id)  # private: not counted
    assert [q.used for q in await store.get_quotas(tenant.id)] == [2]
    await store.release_ip(public.id, taken[0].address)
    assert [q.used for q in await store.get_quotas(tenant.id)] == [1]
    assert await store.reconcile_quotas(tenant.id, fix=False) == []  # usage recomputes alike
    mine = await store.list_ips(tenant_id=tenant.id, public=True)
    assert [a.address for a in mine] == [taken[1].address]
    with pytest.raises(InvalidRecord, match=r"^network_id: .*another tenant"):
        await store.allocate_ip(private.id, tenant_id="someone-else")


async def test_an_allocation_writes_its_events_with_it(store: Store, make: Factory) -> None:
    net = await store.create_network(_net(await make.datacenter()))
    event = OutboxEvent(type="address.allocated", subject=f"network/{net.id}")
    held = await store.allocate_ip(net.id, vm_id="vm-1", mac="52:54:00:00:00:01", events=[event])
    [written] = await store.read_outbox()
    assert written.type == "address.allocated"
    assert written.data == {"address": held.address, "mac": "52:54:00:00:00:01"}


async def test_concurrent_takers_never_share_an_address_and_exhaustion_is_a_conflict(
    store: Store, make: Factory
) -> None:
    """1,000 concurrent takers across tenants on a /22 (1,022 host addresses, the gateway
    reserved), then 30 more than are left: every held address is distinct and the ones too
    many are told AddressesExhausted, with nothing stored for them."""
    dc = await make.datacenter()
    tenants = [await make.tenant() for _ in range(4)]
    net = await store.create_network(_net(dc, "10.8.0.0/22", gateway="10.8.0.1"))

    async def take(i: int) -> str | None:
        try:
            held = await store.allocate_ip(
                net.id, vm_id=f"vm-{i}", tenant_id=tenants[i % 4].id, mac_prefix="52:54:00"
            )
        except AddressesExhausted:
            return None
        return held.address

    got = await asyncio.gather(*(take(i) for i in range(1000)))
    assert None not in got and len(set(got)) == 1000
    rest = await asyncio.gather(*(take(1000 + i) for i in range(51)))
    assert sum(r is None for r in rest) == 30
    held = await store.list_ips(net.id)
    assert len(held) == 1021 == len({h.address for h in held}) == len({h.mac for h in held})
    assert "10.8.0.1" not in {h.address for h in held}


async def test_a_vm_marked_deleted_gives_its_addresses_back_in_that_transaction(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    vm = await make.vm(tenant, dc)
    net = await store.create_network(_net(dc, "10.10.0.0/24", tenant_id=tenant.id))
    held = await store.allocate_ip(net.id, vm_id=vm.id, tenant_id=tenant.id, mac_prefix="52:54")
    await store.unplace_vm(vm.id, expected_version=vm.version, state=VMState.DELETED)
    assert await store.list_ips(net.id) == []
    [released] = await store.list_ips(net.id, released=True)
    assert (released.address, released.vm_id) == (held.address, vm.id)
    assert released.released_at is not None
