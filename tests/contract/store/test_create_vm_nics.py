"""A VM created with NICs: their addresses and MACs are held in the transaction that writes the
VM, its quota and its task, all or nothing, on both stores; released with the VM's delete."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    VM,
    AddressRange,
    Datacenter,
    Network,
    NicRequest,
    Task,
    Tenant,
    VMSpec,
    VMState,
    new_id,
)
from cloudcore.store.usage import vm_usage
from tests.contract.store.factory import Factory


def _vm(tenant_id: str, dc_id: str, *nics: NicRequest) -> tuple[VM, Task]:
    vm = VM(
        id=new_id(uuid=True),
        tenant_id=tenant_id,
        datacenter_id=dc_id,
        name="web",
        spec=VMSpec(cpus=1, memory_mib=256, nics=nics),
    )
    task = Task(id=f"task-{vm.id}", tenant_id=tenant_id, kind="vm.deploy", subject=f"vm/{vm.id}")
    return vm, task


async def _network(
    store: Store, dc: Datacenter, cidr: str, tenant: Tenant | None = None, **fields: object
) -> Network:
    return await store.create_network(
        Network(
            id=new_id("net-"),
            datacenter_id=dc.id,
            tenant_id=None if tenant is None else tenant.id,
            name=f"net-{new_id()}",
            cidr=cidr,
            quarantine_s=0,
            **fields,  # type: ignore[arg-type]
        )
    )


async def _nothing_stored(store: Store, tenant: Tenant) -> None:
    assert (await store.list(VM, where={"tenant_id": tenant.id})).items == []
    assert await store.list_ips(tenant_id=tenant.id) == []
    assert {q.resource: q.used for q in await store.get_quotas(tenant.id)} == {
        "vms": 0,
        "public_ips": 0,
    }


async def test_nics_are_held_with_the_vm_and_its_quota_in_one_create(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "public_ips", 1)
    private = await _network(store, dc, "10.8.0.0/24", tenant)
    public = await _network(store, dc, "198.51.100.0/28")
    vm, task = _vm(
        tenant.id,
        dc.id,
        NicRequest(network_id=private.id),
        NicRequest(network_id=public.id, address="198.51.100.7"),
    )
    before = {e.seq for e in await store.read_outbox()}

    await store.create_vm(vm, task, vm_usage(vm.spec), mac_prefix="02:cc")

    nics = await store.list_ips(vm_id=vm.id)
    assert [n.network_id for n in nics] == sorted([private.id, public.id])
    assert {n.address for n in nics if n.network_id == public.id} == {"198.51.100.7"}
    assert all(n.mac is not None and n.mac.startswith("02:cc:") for n in nics)
    assert all(n.tenant_id == tenant.id for n in nics)
    added = [e for e in await store.read_outbox() if e.seq not in before]
    assert sorted((e.type, e.subject, e.data["address"], e.data["mac"]) for e in added) == sorted(
        ("nic.added", f"vm/{vm.id}", n.address, n.mac) for n in nics
    )
    assert {q.resource: q.used for q in await store.get_quotas(tenant.id)} == {"public_ips": 1}


@pytest.mark.parametrize("whose", ["another tenant's", "another datacenter's", "no"])
async def test_a_network_the_tenant_may_not_use_is_refused_naming_the_nic(
    store: Store, make: Factory, whose: str
) -> None:
    tenant, other, dc = await make.tenant(), await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "vms", 5)
    await store.set_quota(tenant.id, "public_ips", 5)
    ours = await _network(store, dc, "10.8.0.0/24", tenant)
    if whose == "another tenant's":
        network_id = (await _network(store, dc, "10.9.0.0/24", other)).id
    elif whose == "another datacenter's":
        network_id = (await _network(store, await make.datacenter(), "10.9.0.0/24")).id
    else:
        network_id = "net-missing"
    vm, task = _vm(
        tenant.id, dc.id, NicRequest(network_id=ours.id), NicRequest(network_id=network_id)
    )

    with pytest.raises(InvalidRecord, match=r"^nics\[1\]\.network_id: "):
        await store.create_vm(vm, task, vm_usage(vm.spec))

    await _nothing_stored(store, tenant)


async def test_a_taken_address_names_its_holder_and_the_first_nic_is_not_kept(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "vms", 5)
    await store.set_quota(tenant.id, "public_ips", 5)
    public = await _network(store, dc, "198.51.100.0/28")
    holder = await store.allocate_ip(public.id, "198.51.100.9", vm_id="vm-holder")
    vm, task = _vm(
        tenant.id,
        dc.id,
        NicRequest(network_id=public.id),
        NicRequest(network_id=public.id, address=holder.address),
    )

    with pytest.raises(AlreadyExists, match=r"^nics\[1\]\.address: .* held by VM vm-holder"):
        await store.create_vm(vm, task, vm_usage(vm.spec))

    await _nothing_stored(store, tenant)
    assert [a.vm_id for a in await store.list_ips(public.id)] == ["vm-holder"]


async def test_an_address_outside_the_ranges_and_a_full_network_store_nothing(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "vms", 5)
    await store.set_quota(tenant.id, "public_ips", 5)
    tiny = await _network(
        store, dc, "10.8.0.0/24", tenant, ranges=(AddressRange(first="10.8.0.5", last="10.8.0.5"),)
    )
    outside, task = _vm(tenant.id, dc.id, NicRequest(network_id=tiny.id, address="10.8.0.6"))
    with pytest.raises(InvalidRecord, match=r"^nics\[0\]\.address: 10\.8\.0\.6 is outside"):
        await store.create_vm(outside, task, vm_usage(outside.spec))
    await _nothing_stored(store, tenant)

    first, task = _vm(tenant.id, dc.id, NicRequest(network_id=tiny.id))
    await store.create_vm(first, task, vm_usage(first.spec))
    second, task = _vm(tenant.id, dc.id, NicRequest(network_id=tiny.id))
    with pytest.raises(AddressesExhausted, match=r"^nics\[0\]\.network_id: "):
        await store.create_vm(second, task, vm_usage(second.spec))
    assert [a.vm_id for a in await store.list_ips(tiny.id)] == [first.id]
    assert (await store.list(VM, where={"tenant_id": tenant.id})).items[0].id == first.id


async def test_the_public_ips_quota_refuses_the_whole_create(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "vms", 5)
    await store.set_quota(tenant.id, "public_ips", 1)
    public = await _network(store, dc, "198.51.100.0/28")
    vm, task = _vm(
        tenant.id, dc.id, NicRequest(network_id=public.id), NicRequest(network_id=public.id)
    )

    with pytest.raises(QuotaExceeded, match="public_ips"):
        await store.create_vm(vm, task, vm_usage(vm.spec))

    await _nothing_stored(store, tenant)


async def test_the_delete_of_the_vm_releases_its_nics_with_events(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "public_ips", 2)
    public = await _network(store, dc, "198.51.100.0/28")
    vm, task = _vm(tenant.id, dc.id, NicRequest(network_id=public.id))
    stored, _ = await store.create_vm(vm, task, vm_usage(vm.spec))
    [nic] = await store.list_ips(vm_id=vm.id)
    before = {e.seq for e in await store.read_outbox()}

    await store.unplace_vm(vm.id, expected_version=stored.version, state=VMState.DELETED)

    assert await store.list_ips(vm_id=vm.id) == []
    removed = [e for e in await store.read_outbox() if e.seq not in before]
    assert [(e.type, e.data["mac"], e.data["address"]) for e in removed] == [
        ("nic.removed", nic.mac, nic.address)
    ]
    assert {q.resource: q.used for q in await store.get_quotas(tenant.id)} == {"public_ips": 0}


_ADDRESSES = [f"10.8.0.{i}" for i in range(2, 8)]  # a /29: .1 to .6 are hosts; .7 is not


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.sampled_from(_ADDRESSES)), min_size=1, max_size=3),
        min_size=1,
        max_size=6,
    )
)
async def test_every_create_holds_all_its_nics_or_none(
    store: Store, make: Factory, creates: list[list[str | None]]
) -> None:
    """Whatever fixed addresses the creates ask for on a small network, each create either
    holds all its NICs or stores nothing, and no address is held twice."""
    tenant, dc = await make.tenant(), await make.datacenter()
    network = await _network(store, dc, "10.8.0.0/29", tenant)
    made: dict[str, int] = {}
    for wanted in creates:
        nics = [NicRequest(network_id=network.id, address=a) for a in wanted]
        vm, task = _vm(tenant.id, dc.id, *nics)
        try:
            await store.create_vm(vm, task, vm_usage(vm.spec))
        except (InvalidRecord, AlreadyExists, AddressesExhausted):
            continue
        made[vm.id] = len(nics)
    held = await store.list_ips(network.id)
    assert len({a.address for a in held}) == len(held)
    assert {a.vm_id for a in held} == set(made)
    for vm_id, count in made.items():
        assert sum(a.vm_id == vm_id for a in held) == count
    vms = (await store.list(VM, where={"tenant_id": tenant.id}, limit=1000)).items
    assert {v.id for v in vms} == set(made)


async def test_a_taken_public_address_is_attached_to_a_vm_and_detached(
    store: Store, make: Factory
) -> None:
    tenant, other, dc = await make.tenant(), await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "public_ips", 1)
    public = await _network(store, dc, "198.51.100.0/28")
    taken = await store.allocate_ip(public.id, tenant_id=tenant.id)
    before = {e.seq for e in await store.read_outbox()}

    nic = await store.attach_ip(
        public.id, taken.address, "vm-1", tenant_id=tenant.id, mac_prefix="02:aa"
    )
    assert (nic.vm_id, nic.address) == ("vm-1", taken.address)
    assert nic.mac is not None and nic.mac.startswith("02:aa:")
    assert await store.attach_ip(public.id, taken.address, "vm-1", tenant_id=tenant.id) == nic
    with pytest.raises(Conflict, match="attached to VM vm-1"):
        await store.attach_ip(public.id, taken.address, "vm-2", tenant_id=tenant.id)
    with pytest.raises(NotFound):
        await store.attach_ip(public.id, taken.address, "vm-2", tenant_id=other.id)
    assert await store.list_ips(vm_id="vm-1") == [nic]

    kept = await store.attach_ip(public.id, taken.address, None, tenant_id=tenant.id)
    assert (kept.vm_id, kept.mac, kept.tenant_id) == (None, None, tenant.id)
    events = [e for e in await store.read_outbox() if e.seq not in before]
    assert [(e.type, e.data["mac"]) for e in events] == [
        ("nic.added", nic.mac),
        ("nic.removed", nic.mac),
    ]
    assert {q.resource: q.used for q in await store.get_quotas(tenant.id)} == {"public_ips": 1}
