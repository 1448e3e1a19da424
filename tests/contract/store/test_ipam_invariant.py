"""The IPAM invariant, after every step of randomized sequences on both stores.

Steps take any free address, ask for a specific one (free, held, resting, reserved or outside),
release one address, or release all of a VM's. A model says what must happen; after each step
the store must agree with it: the held addresses of each network are the model's, none twice,
none reserved or outside the ranges, no MAC twice, no address in quarantine handed out again,
and each tenant's ``public_ips`` usage is the number of public addresses it holds.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudcore import ipam
from cloudcore.errors import (
    AddressesExhausted,
    AlreadyExists,
    CloudcoreError,
    Conflict,
    InvalidRecord,
    QuotaExceeded,
)
from cloudcore.store.base import Store
from cloudcore.store.records import AddressRange, Network, new_id
from tests.contract.store.factory import Factory

_VMS = 6
_STEP = st.one_of(
    st.tuples(st.just("take"), st.integers(0, 1), st.integers(0, 2), st.integers(0, _VMS - 1)),
    st.tuples(st.just("ask"), st.integers(0, 1), st.integers(0, 17), st.integers(0, _VMS - 1)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("release_vm"), st.integers(0, _VMS - 1)),
)


@dataclass
class _Model:
    nets: list[Network]
    tenants: list[str | None]
    public_limit: int
    held: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    resting: set[tuple[str, str]] = field(default_factory=set)

    def taken(self, net: Network) -> set[str]:
        keys = set(self.held) | (self.resting if net.quarantine_s else set())
        return {a for n, a in keys if n == net.id}

    def public_used(self, tenant: str | None) -> int:
        public = {n.id for n in self.nets if n.tenant_id is None}
        return sum(1 for (n, _), (_, t) in self.held.items() if n in public and t == tenant)

    def expect(self, net: Network, address: str | None, tenant: str | None) -> type[Any] | None:
        """The error the store must raise, or None for success."""
        if net.tenant_id is not None and tenant not in (None, net.tenant_id):
            return InvalidRecord
        if address is not None:
            try:
                address = ipam.check_address(net, address)
            except InvalidRecord:
                return InvalidRecord
            if (net.id, address) in self.held:
                return AlreadyExists
            if address in self.taken(net):
                return Conflict
        elif ipam.free_count(net, self.taken(net)) < 1:
            return AddressesExhausted
        limited = net.tenant_id is None and tenant == self.tenants[0]
        if limited and self.public_used(tenant) >= self.public_limit:
            return QuotaExceeded
        return None

    def release(self, key: tuple[str, str]) -> None:
        del self.held[key]
        net = next(n for n in self.nets if n.id == key[0])
        if net.quarantine_s:
            self.resting.add(key)


class _Run:
    def __init__(self, store: Store, model: _Model) -> None:
        self.store, self.model = store, model

    async def step(self, step: tuple[Any, ...]) -> None:
        kind, model = step[0], self.model
        if kind in ("take", "ask"):
            net = model.nets[step[1]]
            vm = f"vm-{step[3]}"
            if kind == "take":
                tenant, address = model.tenants[step[2]], None
            else:
                tenant = net.tenant_id
                base = int(ipaddress.ip_network(net.cidr).network_address)
                address = str(ipaddress.ip_address(base + step[2]))
            await self._allocate(net, address, vm, tenant)
        elif kind == "release" and model.held:
            key = sorted(model.held)[step[1] % len(model.held)]
            await self.store.release_ip(*key)
            model.release(key)
        elif kind == "release_vm":
            vm = f"vm-{step[1]}"
            released = await self.store.release_vm_ips(vm)
            mine = sorted(k for k, (v, _) in model.held.items() if v == vm)
            assert sorted((r.network_id, r.address) for r in released) == mine
            for key in mine:
                model.release(key)

    async def _allocate(
        self, net: Network, address: str | None, vm: str, tenant: str | None
    ) -> None:
        expected = self.model.expect(net, address, tenant)
        error: CloudcoreError | None = None
        try:
            held = await self.store.allocate_ip(
                net.id, address, vm_id=vm, tenant_id=tenant, mac_prefix="52:54:00"
            )
        except CloudcoreError as exc:
            error = exc
        if expected is None:
            assert error is None, error
            key = (held.network_id, held.address)
            assert key not in self.model.held and held.address not in self.model.taken(net)
            self.model.held[key] = (vm, tenant)
            self.model.resting.discard(key)  # a rested address handed out again
        else:
            assert type(error) is expected, (expected, error)

    async def check(self) -> None:
        store, model = self.store, self.model
        macs: list[str | None] = []
        for net in model.nets:
            held = await store.list_ips(net.id)
            addresses = [h.address for h in held]
            assert len(addresses) == len(set(addresses))
            assert {(h.network_id, h.address): (h.vm_id, h.tenant_id) for h in held} == {
                k: v for k, v in model.held.items() if k[0] == net.id
            }
            for address in addresses:
                assert ipam.check_address(net, address) == address  # in the ranges, not reserved
            macs += [h.mac for h in held]
        assert None not in macs and len(macs) == len(set(macs))
        quotas = await store.get_quotas(str(model.tenants[0]))
        assert [q.used for q in quotas] == [model.public_used(model.tenants[0])]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_STEP, min_size=1, max_size=30))
async def test_every_address_is_held_once_and_as_the_model_says(
    store: Store, make: Factory, steps: list[tuple[Any, ...]]
) -> None:
    dc = await make.datacenter()
    owner, other = await make.tenant(), await make.tenant()
    private = await store.create_network(
        Network(
            id=new_id("net-"),
            datacenter_id=dc.id,
            tenant_id=owner.id,
            name=f"private-{new_id()}",
            cidr="10.9.0.0/28",
            gateway="10.9.0.1",
            ranges=(AddressRange(first="10.9.0.2", last="10.9.0.9"),),
            quarantine_s=0,
        )
    )
    public = await store.create_network(
        Network(
            id=new_id("net-"),
            datacenter_id=dc.id,
            name=f"public-{new_id()}",
            cidr="192.0.2.0/29",  # 6 host addresses
            excluded=("192.0.2.3",),
            quarantine_s=3600,
        )
    )
    await store.set_quota(owner.id, "public_ips", 3)
    model = _Model(nets=[private, public], tenants=[owner.id, other.id, None], public_limit=3)
    run = _Run(store, model)
    try:
        await run.check()
        for step in steps:
            await run.step(step)
            await run.check()
    finally:
        for vm in range(_VMS):
            with contextlib.suppress(CloudcoreError):
                await store.release_vm_ips(f"vm-{vm}")
