"""The totals of listings (``Page.total``), with large ones kept for a moment.

Counting is a scan of every matching row (an index's at best): 100,000 VMs cost tens of
milliseconds a page, more than the page itself. A total of :data:`CACHED_FROM` rows or more is
therefore kept for :data:`TTL` seconds per listing (table and filters), then refreshed by one
count at a time however many pages ask meanwhile, which get the kept total while the count
runs (for up to :data:`GRACE` seconds more; past that they wait for the count). A smaller one
is counted on every page, so a listing of a tenant's own VMs stays exact to the write. A large
total may thus be a few seconds old under load: a client cannot tell it from a count that raced
writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["CACHED_FROM", "GRACE", "TTL", "Totals"]

#: Totals at least this large are kept for TTL seconds.
CACHED_FROM = 10_000
TTL = 1.0
#: Past its TTL, a kept total is still answered while one count refreshes it, for this long.
GRACE = 5.0
#: Listings remembered at most (past it, all are forgotten).
MAX_ENTRIES = 1024


def _now() -> float:
    return time.monotonic()


class Totals:
    """The totals of one store's listings (one per process)."""

    def __init__(
        self, *, cached_from: int = CACHED_FROM, ttl: float = TTL, grace: float = GRACE
    ) -> None:
        self._cached_from = cached_from
        self._ttl = ttl
        self._grace = grace
        self._kept: dict[Hashable, tuple[float, int]] = {}
        self._counting: dict[Hashable, asyncio.Task[int]] = {}

    async def total(self, key: Hashable, count: Callable[[], Awaitable[int]]) -> int:
        """The total of the listing ``key``, from ``count`` unless a large one is fresh."""
        kept = self._kept.get(key)
        if kept is None:
            return self._keep(key, await count())
        now = _now()
        if kept[0] > now:
            return kept[1]
        # Large and stale: one count refreshes it for every page asking meanwhile, which
        # get the kept total while it runs (no page waits for a count) unless it is older
        # than the grace.
        task = self._counting.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(key, count))
            self._counting[key] = task
            task.add_done_callback(self._counted(key))
        if kept[0] + self._grace > now:
            return kept[1]
        return await asyncio.shield(task)

    def _counted(self, key: Hashable) -> Callable[[asyncio.Task[int]], None]:
        def done(task: asyncio.Task[int]) -> None:
            self._counting.pop(key, None)
            if not task.cancelled() and task.exception() is not None:
                self._kept.pop(key, None)  # a failed count: the next page counts itself

        return done

    async def _refresh(self, key: Hashable, count: Callable[[], Awaitable[int]]) -> int:
        return self._keep(key, await count())

    def _keep(self, key: Hashable, n: int) -> int:
        if n < self._cached_from:
            self._kept.pop(key, None)
            return n
        if len(self._kept) >= MAX_ENTRIES:
            self._kept.clear()
        self._kept[key] = (_now() + self._ttl, n)
        return n
