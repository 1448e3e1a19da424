"""NICs: defined with the VM on the backend's name for the cloud network, with their MACs;
hot-plugged and removed where the driver declares HOTPLUG_NIC, idempotently."""

from __future__ import annotations

import msgspec
import pytest

from cloudcore.errors import UnsupportedOperation
from hypervisor_drivers.base import Capability, GuestPower, NicInfo
from tests.contract.hypervisor.harness import Harness


def _nic(harness: Harness, mac: str) -> msgspec.Struct:
    return msgspec.structs.replace(harness.network, mac=mac)


async def test_a_vm_is_defined_with_its_nics_on_the_network_and_their_macs(
    harness: Harness,
) -> None:
    first, second = "52:54:00:0a:00:01", "52:54:00:0a:00:02"
    spec = await harness.define(nics=[_nic(harness, first), _nic(harness, second.upper())])
    assert await harness.driver.list_nics(spec.uuid) == [
        NicInfo(mac=first, source=harness.network_name),
        NicInfo(mac=second, source=harness.network_name),
    ]


async def test_a_running_vm_gets_and_loses_a_nic_idempotently(harness: Harness) -> None:
    harness.needs(Capability.HOTPLUG_NIC)
    kept, plugged = "52:54:00:0b:00:01", "52:54:00:0b:00:02"
    spec = await harness.running(nics=[_nic(harness, kept)])

    await harness.driver.attach_nic(spec.uuid, _nic(harness, plugged))
    await harness.driver.attach_nic(spec.uuid, _nic(harness, plugged))
    macs = [n.mac for n in await harness.driver.list_nics(spec.uuid)]
    assert sorted(macs) == [kept, plugged]

    await harness.driver.detach_nic(spec.uuid, plugged.upper())
    await harness.driver.detach_nic(spec.uuid, plugged)
    assert [n.mac for n in await harness.driver.list_nics(spec.uuid)] == [kept]
    assert await harness.driver.power_state(spec.uuid) is GuestPower.RUNNING


async def test_without_hotplug_a_nic_change_is_refused_and_nothing_changes(
    harness: Harness,
) -> None:
    if harness.driver.supports(Capability.HOTPLUG_NIC):
        pytest.skip("the driver hot-plugs NICs")
    spec = await harness.running(nics=[_nic(harness, "52:54:00:0c:00:01")])
    with pytest.raises(UnsupportedOperation, match="hotplug_nic"):
        await harness.driver.attach_nic(spec.uuid, _nic(harness, "52:54:00:0c:00:02"))
    with pytest.raises(UnsupportedOperation, match="hotplug_nic"):
        await harness.driver.detach_nic(spec.uuid, "52:54:00:0c:00:01")
    assert [n.mac for n in await harness.driver.list_nics(spec.uuid)] == ["52:54:00:0c:00:01"]
