"""Publish, replay from a position, live tail without gap or duplicate, filters, retention and
consumer groups: the same behaviour from both buses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cloudcore.errors import InvalidRecord, PositionExpired
from cloudcore.events.base import START, Event, EventBus
from tests.contract.events.conftest import OpenBus


async def _take(events: AsyncIterator[Event], n: int, timeout: float = 5.0) -> list[Event]:
    taken: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in events:
            taken.append(event)
            if len(taken) == n:
                break
    return taken


async def test_positions_grow_in_publication_order(bus: EventBus) -> None:
    events = [
        await bus.publish("vm.created", f"vm/{i}", tenant="t1", data={"i": i}) for i in range(5)
    ]

    positions = [e.position for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == 5
    assert all(p > START for p in positions)
    assert await bus.last_position() == positions[-1]


async def test_read_replays_after_a_position(bus: EventBus) -> None:
    sent = [await bus.publish("vm.started", f"vm/{i}", data={"i": i}) for i in range(6)]

    assert await bus.read() == sent
    assert await bus.read(after=sent[2].position) == sent[3:]
    assert await bus.read(after=sent[0].position, limit=2) == sent[1:3]
    assert await bus.read(after=sent[-1].position) == []


async def test_read_back_reads_the_newest_first_before_a_position(bus: EventBus) -> None:
    assert await bus.read_back() == []
    sent = [await bus.publish("vm.started", f"vm/{i}", data={"i": i}) for i in range(6)]

    assert await bus.read_back() == sent[::-1]
    assert await bus.read_back(limit=2) == [sent[5], sent[4]]
    assert await bus.read_back(before=sent[3].position) == [sent[2], sent[1], sent[0]]
    assert await bus.read_back(before=sent[3].position, limit=1) == [sent[2]]
    assert await bus.read_back(before=sent[0].position) == []
    assert await bus.read_back(before=START) == []


async def test_a_subscriber_gets_the_replay_then_live_events_without_gap_or_repeat(
    bus: EventBus,
) -> None:
    early = [await bus.publish("vm.stopped", f"vm/{i}", data={"i": i}) for i in range(5)]
    stream = bus.subscribe(after=early[1].position)
    first = await _take(stream, 3)

    late = await asyncio.gather(
        *(bus.publish("vm.started", "vm/x", data={"i": i}) for i in range(50))
    )
    rest = await _take(stream, 50)
    await stream.aclose()  # type: ignore[attr-defined]

    assert first == early[2:]
    assert rest == sorted(late, key=lambda e: e.position)


async def test_a_subscriber_from_now_sees_only_new_events(bus: EventBus) -> None:
    await bus.publish("vm.created", "vm/old")
    stream = bus.subscribe()
    waiting = asyncio.ensure_future(_take(stream, 1))
    await asyncio.sleep(0)  # let the subscription start before publishing
    while not waiting.done():
        new = await bus.publish("vm.created", "vm/new")
        await asyncio.wait([waiting], timeout=0.05)
    assert [e.subject for e in waiting.result()] == ["vm/new"]
    assert waiting.result()[0].subject == new.subject


async def test_subscriptions_filter_by_type_subject_and_tenant(bus: EventBus) -> None:
    await bus.publish("vm.created", "vm/1", tenant="a")
    await bus.publish("host.down", "host/1")
    await bus.publish("vm.started", "vm/2", tenant="b")
    await bus.publish("vm.created", "vm/3", tenant="b")

    by_type = await _take(bus.subscribe(after=START, types={"vm.created"}), 2)
    by_subject = await _take(bus.subscribe(after=START, subject_prefix="host/"), 1)
    by_tenant = await _take(bus.subscribe(after=START, tenant="b"), 2)

    assert [e.subject for e in by_type] == ["vm/1", "vm/3"]
    assert [e.subject for e in by_subject] == ["host/1"]
    assert [e.subject for e in by_tenant] == ["vm/2", "vm/3"]


async def test_a_position_behind_the_retained_history_raises_position_expired(
    open_bus: OpenBus,
) -> None:
    bus = await open_bus(retention=10)
    first = await bus.publish("vm.created", "vm/0")
    for i in range(600):  # Redis trims whole stream nodes (~100 entries) at a time
        await bus.publish("vm.created", f"vm/{i + 1}")

    with pytest.raises(PositionExpired):
        await bus.read(after=first.position)
    with pytest.raises(PositionExpired):
        await _take(bus.subscribe(after=first.position), 1)
    retained = await bus.read(after=START)
    assert 10 <= len(retained) < 600
    assert retained[-1].subject == "vm/600"


async def test_bad_events_and_positions_are_refused(bus: EventBus) -> None:
    with pytest.raises(InvalidRecord):
        await bus.publish("", "vm/1")
    with pytest.raises(InvalidRecord):
        await bus.publish("vm.created", "vm/1", data={"x": object()})
    with pytest.raises(InvalidRecord, match="position"):
        await bus.read(after="yesterday")
    assert await bus.read() == []


async def test_a_group_delivers_each_event_to_one_of_its_consumers(bus: EventBus) -> None:
    sent = [await bus.publish("vm.drifted", f"vm/{i}") for i in range(10)]
    got: dict[str, list[Event]] = {"node-1": [], "node-2": []}
    all_in = asyncio.Event()

    async def run(consumer: str) -> None:
        async for event in bus.consume("reconciler", consumer, after=START):
            got[consumer].append(event)
            await bus.ack("reconciler", event.position)
            if sum(map(len, got.values())) == len(sent):
                all_in.set()

    workers = [asyncio.create_task(run(c)) for c in got]
    async with asyncio.timeout(5):
        await all_in.wait()
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)

    delivered = got["node-1"] + got["node-2"]
    assert sorted(delivered, key=lambda e: e.position) == sent
    assert not {e.position for e in got["node-1"]} & {e.position for e in got["node-2"]}


async def test_unacknowledged_events_are_delivered_again_to_their_consumer(bus: EventBus) -> None:
    sent = [await bus.publish("vm.drifted", f"vm/{i}") for i in range(3)]
    consumer = bus.consume("janitor", "node-1", after=START)
    delivered = await _take(consumer, 3)
    await consumer.aclose()  # type: ignore[attr-defined]
    await bus.ack("janitor", delivered[0].position)

    again = bus.consume("janitor", "node-1")
    redelivered = await _take(again, 2)
    await again.aclose()  # type: ignore[attr-defined]

    assert delivered == sent
    assert redelivered == sent[1:]


async def test_an_event_keeps_the_id_and_time_it_was_published_with(bus: EventBus) -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    published = await bus.publish("vm.started", "vm/1", id="evt-given", time=at)
    fresh = await bus.publish("vm.started", "vm/1")

    stored = await bus.read(after=START)
    assert [(e.id, e.time) for e in stored[:1]] == [("evt-given", at)]
    assert published.id == "evt-given" and fresh.id.startswith("evt-")
    assert stored[1].id == fresh.id != "evt-given"
