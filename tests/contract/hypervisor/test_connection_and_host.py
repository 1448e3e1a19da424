"""Connection, capabilities and host facts."""

from __future__ import annotations

import pytest

from cloudcore.errors import BackendUnavailable
from hypervisor_drivers.base import Capability, HostInventory
from tests.contract.hypervisor.harness import Harness


async def test_capabilities_are_declared_as_capability_members(harness: Harness) -> None:
    caps = harness.driver.capabilities
    assert isinstance(caps, frozenset)
    assert caps and all(isinstance(c, Capability) for c in caps)
    assert all(harness.driver.supports(c) for c in caps)


async def test_connect_is_idempotent(harness: Harness) -> None:
    await harness.driver.connect()
    assert isinstance(await harness.driver.host_inventory(), HostInventory)


async def test_inventory_reports_the_hosts_size_and_hypervisor(harness: Harness) -> None:
    inventory = await harness.driver.host_inventory()
    assert inventory.cpus == harness.host_cpus
    assert inventory.memory_kib == harness.host_memory_kib
    assert inventory.hypervisor_type
    assert inventory.hypervisor_version.count(".") == 2
    assert inventory.hostname


async def test_capacity_counts_running_vms_only(harness: Harness) -> None:
    empty = await harness.driver.host_capacity()
    assert (empty.allocated_vcpus, empty.allocated_memory_kib, empty.running_vms) == (0, 0, 0)
    assert (empty.cpus, empty.memory_kib) == (harness.host_cpus, harness.host_memory_kib)
    await harness.define(vcpus=3, memory_mib=256)
    await harness.running(vcpus=2, memory_mib=128)
    used = await harness.driver.host_capacity()
    assert (used.allocated_vcpus, used.allocated_memory_kib, used.running_vms) == (
        2,
        128 * 1024,
        1,
    )


async def test_calls_before_connect_and_after_close_raise_backend_unavailable(
    harness: Harness,
) -> None:
    fresh = harness.fresh(harness.driver.settings)
    with pytest.raises(BackendUnavailable) as before:
        await fresh.list_vms()
    assert before.value.retryable
    await fresh.connect()
    await fresh.close()
    await fresh.close()  # idempotent
    with pytest.raises(BackendUnavailable):
        await fresh.list_vms()


async def test_close_ends_every_event_stream(harness: Harness) -> None:
    fresh = harness.fresh(harness.driver.settings)
    await fresh.connect()
    stream = fresh.subscribe()
    await fresh.close()
    assert [event async for event in stream] == []
    assert [event async for event in fresh.subscribe()] == []


async def test_an_unreachable_host_raises_backend_unavailable(harness: Harness) -> None:
    unreachable = harness.fresh(harness.unreachable)
    with pytest.raises(BackendUnavailable):
        await unreachable.connect()
