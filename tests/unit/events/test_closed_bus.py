"""A closed event bus ends its subscribers with BusClosed instead of returning at once (which
left a consumer that loops on ``subscribe`` spinning a core)."""

from __future__ import annotations

import asyncio

import pytest

from cloudcore.errors import BusClosed, CloudcoreError
from cloudcore.events import START
from cloudcore.events.local import LocalEventBus


async def test_closing_the_bus_ends_a_waiting_subscriber() -> None:
    bus = LocalEventBus()
    await bus.publish("vm.created", "vm/1")
    seen: list[str] = []
    ready = asyncio.Event()

    async def follow() -> None:
        async for event in bus.subscribe(after=START):
            seen.append(event.type)
            ready.set()

    following = asyncio.create_task(follow())
    await ready.wait()  # it has the first event and waits for more
    await bus.close()
    with pytest.raises(BusClosed):
        await asyncio.wait_for(following, timeout=2.0)
    assert seen == ["vm.created"]


async def test_a_subscription_or_consumer_started_after_the_close_raises_at_once() -> None:
    bus = LocalEventBus()
    await bus.close()
    with pytest.raises(BusClosed):
        await anext(aiter(bus.subscribe(after=START)))
    with pytest.raises(BusClosed):
        await anext(aiter(bus.consume("janitor", "node-1", after=START)))
    with pytest.raises(BusClosed) as caught:
        await bus.publish("vm.created", "vm/1")
    assert isinstance(caught.value, CloudcoreError)


async def test_closing_the_bus_ends_a_waiting_consumer() -> None:
    bus = LocalEventBus()
    consumer = aiter(bus.consume("janitor", "node-1"))
    waiting = asyncio.create_task(anext(consumer))
    await bus.close()
    with pytest.raises(BusClosed):
        await asyncio.wait_for(waiting, timeout=2.0)
