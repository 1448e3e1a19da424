"""Lifecycle events: pushed by the hypervisor, or polled, in the order things happened."""

from __future__ import annotations

import pytest

from hypervisor_drivers.base import Capability, EventKind, GuestPower
from hypervisor_drivers.events import EventHub, PowerPoller
from tests.contract.hypervisor.harness import Harness, next_event


async def test_each_power_change_is_an_event_with_the_new_power_state(harness: Harness) -> None:
    async with harness.driver.subscribe() as events:
        spec = await harness.define()
        defined = await next_event(events, spec.uuid, kind=EventKind.DEFINED)
        assert defined.vm_name == spec.name
        await harness.driver.start_vm(spec.uuid)
        await next_event(events, spec.uuid, kind=EventKind.STARTED, power=GuestPower.RUNNING)
        if harness.driver.supports(Capability.PAUSE):
            await harness.driver.pause_vm(spec.uuid)
            await next_event(events, spec.uuid, kind=EventKind.PAUSED, power=GuestPower.PAUSED)
            await harness.driver.unpause_vm(spec.uuid)
            await next_event(events, spec.uuid, kind=EventKind.RESUMED, power=GuestPower.RUNNING)
        if harness.driver.supports(Capability.SUSPEND):
            await harness.driver.suspend_vm(spec.uuid)
            await next_event(events, spec.uuid, power=GuestPower.SUSPENDED)
            await harness.driver.resume_vm(spec.uuid)
            await next_event(events, spec.uuid, power=GuestPower.RUNNING)
        await harness.driver.stop_vm(spec.uuid, timeout=0)
        stopped = await next_event(events, spec.uuid, kind=EventKind.STOPPED)
        assert stopped.power is GuestPower.STOPPED
        await harness.driver.destroy_vm(spec.uuid)
        undefined = await next_event(events, spec.uuid, kind=EventKind.UNDEFINED)
        assert undefined.power is None
        assert stopped.at <= undefined.at


async def test_every_subscriber_gets_every_event(harness: Harness) -> None:
    async with harness.driver.subscribe() as first, harness.driver.subscribe() as second:
        spec = await harness.running()
        for events in (first, second):
            await next_event(events, spec.uuid, kind=EventKind.STARTED)


async def test_a_closed_stream_receives_nothing_more(harness: Harness) -> None:
    events = harness.driver.subscribe()
    events.close()
    await harness.running()
    assert [event async for event in events] == []


async def test_events_are_pushed_when_the_capability_is_declared(harness: Harness) -> None:
    if not harness.driver.supports(Capability.LIFECYCLE_EVENTS):
        pytest.skip("this driver polls")
    async with harness.driver.subscribe() as events:
        spec = await harness.running()
        started = await next_event(events, spec.uuid, kind=EventKind.STARTED, timeout=1)
        assert started.detail != "polled"


async def test_the_poller_turns_list_vms_differences_into_events(harness: Harness) -> None:
    hub = EventHub()
    poller = PowerPoller(harness.driver.list_vms, hub, interval=0.05)
    existing = await harness.running()
    await poller.start()
    try:
        async with hub.subscribe() as events:
            spec = await harness.define()
            defined = await next_event(events, spec.uuid, kind=EventKind.DEFINED)
            assert (defined.power, defined.detail) == (GuestPower.STOPPED, "polled")
            await harness.driver.start_vm(spec.uuid)
            await next_event(events, spec.uuid, kind=EventKind.STARTED, power=GuestPower.RUNNING)
            if harness.driver.supports(Capability.PAUSE):
                await harness.driver.pause_vm(spec.uuid)
                await next_event(events, spec.uuid, kind=EventKind.PAUSED)
                await harness.driver.unpause_vm(spec.uuid)
                await next_event(events, spec.uuid, kind=EventKind.RESUMED)
            await harness.driver.destroy_vm(spec.uuid)
            await next_event(events, spec.uuid, kind=EventKind.UNDEFINED)
            # The VM that ran before the baseline sweep never produced an event.
            await harness.driver.stop_vm(existing.uuid, timeout=0)
            stopped = await next_event(events, existing.uuid)
            assert stopped.kind is EventKind.STOPPED
    finally:
        await poller.stop()
        await poller.stop()
