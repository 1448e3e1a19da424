"""Batching: one AMQP body per destination per loop tick, bounded by count and bytes."""

from __future__ import annotations

import asyncio

import msgspec

from cloudcore.transport.amqp._batcher import Batcher, frame


def make(max_bytes: int = 1 << 20, max_count: int = 1000) -> tuple[Batcher, list[int]]:
    woken: list[int] = []
    batcher = Batcher(
        max_bytes=max_bytes, max_count=max_count, max_delay=0.0, on_ready=lambda: woken.append(1)
    )
    return batcher, woken


def item(n: int) -> bytes:
    return msgspec.msgpack.encode([n, "x"])


def test_frame_is_a_msgpack_array_of_the_items() -> None:
    for count in (0, 1, 15, 16, 70_000):
        items = [item(i) for i in range(count)]
        decoded = msgspec.msgpack.decode(frame(items))
        assert decoded == [[i, "x"] for i in range(count)]


async def test_items_sent_in_one_tick_leave_as_one_batch_per_destination() -> None:
    batcher, _ = make()
    for i in range(10):
        batcher.add("x", "node.a", item(i), persistent=True, expires_at=None)
        batcher.add("x", "node.b", item(i), persistent=False, expires_at=5.0)
    assert not batcher.ready
    await asyncio.sleep(0)  # the end of the tick closes the batches
    batches = {b.routing_key: b for b in batcher.ready}
    assert set(batches) == {"node.a", "node.b"}
    assert [msgspec.msgpack.decode(b.body())[0][0] for b in batches.values()] == [0, 0]
    assert batches["node.a"].persistent and batches["node.a"].expires_at is None
    assert not batches["node.b"].persistent and batches["node.b"].expires_at == 5.0


async def test_a_transient_item_after_a_persistent_one_shares_its_batch_and_order() -> None:
    batcher, _ = make()
    batcher.add("x", "node.a", item(1), persistent=True, expires_at=None)
    batcher.add("x", "node.a", item(2), persistent=False, expires_at=3.0)
    batcher.flush()
    (batch,) = batcher.ready
    assert batch.persistent and batch.expires_at is None
    assert [i[0] for i in msgspec.msgpack.decode(batch.body())] == [1, 2]


async def test_batches_close_at_the_count_and_byte_bounds() -> None:
    batcher, woken = make(max_count=3)
    for i in range(7):
        batcher.add("x", "node.a", item(i), persistent=True, expires_at=None)
    assert [len(b.items) for b in batcher.ready] == [3, 3]
    assert woken
    batcher.flush()
    assert [len(b.items) for b in batcher.ready] == [3, 3, 1]

    small, _ = make(max_bytes=20)
    for i in range(5):
        small.add("x", "node.a", item(i) + b"", persistent=True, expires_at=None)
    small.flush()
    assert all(b.size <= 20 for b in small.ready)
    assert sum(len(b.items) for b in small.ready) == 5


async def test_the_batch_expires_with_its_longest_lived_item() -> None:
    batcher, _ = make()
    batcher.add("x", "ctl.a", item(1), persistent=False, expires_at=2.0)
    batcher.add("x", "ctl.a", item(2), persistent=False, expires_at=9.0)
    batcher.add("x", "ctl.a", item(3), persistent=False, expires_at=4.0)
    batcher.flush()
    assert batcher.ready[0].expires_at == 9.0
