"""Event streams: fan-out, delivery from other threads, overflow, closing."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

from hypervisor_drivers.base import EventKind, GuestPower, LifecycleEvent
from hypervisor_drivers.events import EventHub


def _event(n: int) -> LifecycleEvent:
    return LifecycleEvent(
        vm_uuid=f"vm-{n}",
        vm_name=f"vm-{n}",
        kind=EventKind.STARTED,
        power=GuestPower.RUNNING,
        detail="booted",
        at=datetime.now(UTC),
    )


async def test_events_published_from_another_thread_reach_the_subscribers_loop() -> None:
    hub = EventHub()
    async with hub.subscribe() as events:
        thread = threading.Thread(target=hub.publish, args=(_event(1),))
        thread.start()
        received = await asyncio.wait_for(anext(events), 2)
        thread.join()
    assert received.vm_uuid == "vm-1"


async def test_a_full_stream_drops_its_oldest_events_and_counts_them() -> None:
    hub = EventHub()
    events = hub.subscribe(maxsize=2)
    for n in range(5):
        hub.publish(_event(n))
    hub.close()
    received = [e.vm_uuid async for e in events]
    # The close marker takes a slot too: the newest event and the end survive.
    assert received == ["vm-4"]
    assert events.dropped == 4


async def test_closing_the_hub_ends_streams_after_the_queued_events() -> None:
    hub = EventHub()
    events = hub.subscribe()
    hub.publish(_event(1))
    hub.close()
    hub.publish(_event(2))
    assert [e.vm_uuid async for e in events] == ["vm-1"]
    assert [e async for e in events] == []  # stays ended
    assert [e async for e in hub.subscribe()] == []
