"""Balancing plans, as properties over random datacenters: a plan never overbooks a host,
moves a VM at most once, only RUNNING VMs to schedulable hosts, never widens the spread; plans
applied one after another converge, and no VM ever goes back to a host it left (no ping-pong)."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.balancer import BalancePolicy, plan
from cloudcore.store.records import VM, AdminState, Host, HostHealth, HostPower, VMSpec, VMState

_SIZES = st.sampled_from([256, 512, 1024, 2048, 4096])


@st.composite
def datacenters(draw: st.DrawFn) -> tuple[list[Host], list[VM]]:
    count = draw(st.integers(2, 8))
    hosts = [
        Host(
            id=f"h{n}",
            datacenter_id="dc",
            name=f"h{n}",
            hypervisor="libvirt",
            cpus=64,
            memory_mib=draw(st.sampled_from([8192, 16384])),
            health=HostHealth.HEALTHY,
            admin_state=draw(st.sampled_from([AdminState.ENABLED] * 4 + [AdminState.DISABLED])),
        )
        for n in range(count)
    ]
    vms: list[VM] = []
    for n in range(draw(st.integers(0, 30))):
        host = hosts[draw(st.integers(0, count - 1))]
        size = draw(_SIZES)
        if host.memory_mib_used + size > host.memory_mib:
            continue
        hosts[hosts.index(host)] = msgspec.structs.replace(
            host, memory_mib_used=host.memory_mib_used + size, cpus_used=host.cpus_used + 1
        )
        state = draw(st.sampled_from([VMState.RUNNING] * 3 + [VMState.STOPPED]))
        vms.append(
            VM(
                id=f"vm{n}",
                tenant_id="t",
                datacenter_id="dc",
                host_id=host.id,
                name=f"vm{n}",
                spec=VMSpec(cpus=1, memory_mib=size),
                state=state,
            )
        )
    return hosts, vms


def _apply(hosts: list[Host], vms: list[VM], moves: list) -> tuple[list[Host], list[VM]]:  # type: ignore[type-arg]
    by_id = {h.id: h for h in hosts}
    vm_by_id = {v.id: v for v in vms}
    for m in moves:
        vm = vm_by_id[m.vm_id]
        src, dst = by_id[m.source], by_id[m.target]
        by_id[src.id] = msgspec.structs.replace(
            src,
            memory_mib_used=src.memory_mib_used - vm.spec.memory_mib,
            cpus_used=src.cpus_used - 1,
        )
        by_id[dst.id] = msgspec.structs.replace(
            dst,
            memory_mib_used=dst.memory_mib_used + vm.spec.memory_mib,
            cpus_used=dst.cpus_used + 1,
        )
        vm_by_id[vm.id] = msgspec.structs.replace(vm, host_id=dst.id)
    return list(by_id.values()), list(vm_by_id.values())


@settings(max_examples=200, deadline=None)
@given(dc=datacenters(), policy=st.sampled_from(list(BalancePolicy)))
def test_a_plan_is_legal_and_never_widens_the_spread(
    dc: tuple[list[Host], list[VM]], policy: BalancePolicy
) -> None:
    hosts, vms = dc
    result = plan(hosts, vms, policy, threshold=0.1, max_moves=50)
    by_vm = {v.id: v for v in vms}
    schedulable = {h.id for h in hosts if h.admin_state is AdminState.ENABLED}
    assert len({m.vm_id for m in result.moves}) == len(result.moves)  # each VM at most once
    for m in result.moves:
        assert by_vm[m.vm_id].state is VMState.RUNNING and by_vm[m.vm_id].host_id == m.source
        assert m.target in schedulable and m.source != m.target
    after, _ = _apply(hosts, vms, result.moves)
    assert all(h.memory_mib_used <= h.memory_mib for h in after)  # never overbooked
    if policy is BalancePolicy.SPREAD:
        assert result.spread_after <= result.spread_before + 1e-9
    if policy is BalancePolicy.OFF:
        assert result.moves == []


@settings(max_examples=100, deadline=None)
@given(dc=datacenters())
def test_spread_plans_applied_in_turn_converge_and_never_move_a_vm_back(
    dc: tuple[list[Host], list[VM]],
) -> None:
    hosts, vms = dc
    left: dict[str, set[str]] = {}  # vm: hosts it left
    for _ in range(30):
        result = plan(hosts, vms, BalancePolicy.SPREAD, threshold=0.1, max_moves=5)
        if not result.moves:
            return
        for m in result.moves:
            assert m.target not in left.get(m.vm_id, set()), "a VM went back to a host it left"
            left.setdefault(m.vm_id, set()).add(m.source)
        hosts, vms = _apply(hosts, vms, result.moves)
    raise AssertionError("plans did not converge in 30 rounds")


@settings(max_examples=100, deadline=None)
@given(dc=datacenters())
def test_consolidation_rounds_converge_never_move_a_vm_back_and_skip_standby_hosts(
    dc: tuple[list[Host], list[VM]],
) -> None:
    """As the balancer runs it: each round's moves applied, then the hosts left empty put to
    STANDBY (out of every later plan); nothing lands on a standby host, nothing comes back."""
    hosts, vms = dc
    left: dict[str, set[str]] = {}
    for _ in range(30):
        result = plan(hosts, vms, BalancePolicy.CONSOLIDATE, max_moves=5, ceiling=0.85)
        asleep = {h.id for h in hosts if h.power_state is HostPower.STANDBY}
        for m in result.moves:
            assert m.target not in asleep and m.source not in asleep
            assert m.target not in left.get(m.vm_id, set()), "a VM went back to a host it left"
            left.setdefault(m.vm_id, set()).add(m.source)
        hosts, vms = _apply(hosts, vms, result.moves)
        hosts = [
            msgspec.structs.replace(h, power_state=HostPower.STANDBY)
            if h.id in result.standby and h.memory_mib_used == 0
            else h
            for h in hosts
        ]
        if not result.moves:
            break
    else:
        raise AssertionError("consolidation did not converge in 30 rounds")
    on = [h for h in hosts if h.power_state is HostPower.ON and h.admin_state is AdminState.ENABLED]
    assert all(h.memory_mib_used <= h.memory_mib for h in hosts)
    # converged: no schedulable host left empty and awake
    assert not [h for h in on if h.memory_mib_used == 0 and h.cpus_used == 0]
