"""Listing totals: small ones counted on every page, large ones kept a moment and refreshed by
one count however many pages ask at once."""

from __future__ import annotations

import asyncio

import pytest

from cloudcore.store import _totals
from cloudcore.store._totals import Totals
from tests.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(_totals, "_now", c)
    return c


class Counter:
    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> int:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.n


async def _is(totals: Totals, key: str, count: Counter, n: int) -> bool:
    return await totals.total(key, count) == n


async def test_a_small_total_is_counted_on_every_page(clock: Clock) -> None:
    totals, count = Totals(cached_from=10, ttl=1.0), Counter(9)
    assert [await totals.total("k", count) for _ in range(3)] == [9, 9, 9]
    assert count.calls == 3


async def test_a_large_total_is_kept_for_the_ttl_then_counted_again(clock: Clock) -> None:
    totals, count = Totals(cached_from=10, ttl=1.0), Counter(10)
    assert await totals.total("k", count) == 10
    count.n = 11
    clock.now += 0.9
    assert await totals.total("k", count) == 10  # kept
    assert await totals.total("other", count) == 11  # per listing
    clock.now += 0.2
    assert await totals.total("k", count) == 10  # stale: answered while a count refreshes it
    await eventually(lambda: _is(totals, "k", count, 11))
    assert count.calls == 3


async def test_a_stale_large_total_is_answered_while_one_count_refreshes_it(
    clock: Clock,
) -> None:
    totals, count = Totals(cached_from=10, ttl=1.0, grace=5.0), Counter(50)
    await totals.total("k", count)
    clock.now += 2
    count.n, count.gate = 60, asyncio.Event()
    # No page waits for the count: each gets the kept total, one count runs.
    assert await asyncio.gather(*(totals.total("k", count) for _ in range(20))) == [50] * 20
    count.gate.set()
    await eventually(lambda: _is(totals, "k", count, 60))
    assert count.calls == 2


async def test_past_the_grace_pages_wait_for_one_shared_count(clock: Clock) -> None:
    totals, count = Totals(cached_from=10, ttl=1.0, grace=5.0), Counter(50)
    await totals.total("k", count)
    clock.now += 10
    count.n, count.gate = 60, asyncio.Event()
    waiting = [asyncio.create_task(totals.total("k", count)) for _ in range(20)]
    await asyncio.sleep(0)  # every page asks while the gate is shut: none can be answered
    assert not any(task.done() for task in waiting)
    count.gate.set()
    assert await asyncio.gather(*waiting) == [60] * 20
    assert count.calls == 2


async def test_a_total_that_shrinks_below_the_threshold_is_exact_again(clock: Clock) -> None:
    totals, count = Totals(cached_from=10, ttl=1.0), Counter(10)
    await totals.total("k", count)
    clock.now += 2
    count.n = 3
    await eventually(lambda: _is(totals, "k", count, 3))
    count.n = 4
    assert await totals.total("k", count) == 4  # small: counted every time
