"""The totals of listings (``Page.total``), with large ones kept for a moment.

Counting is a scan of every matching row (an index's at best): 100,000 VMs cost tens of
milliseconds a page, more than the page itself. A total of :data:`CACHED_FROM` rows or more is
therefore kept for :data:`TTL` seconds per listing (table and filters), and refreshed by one
count at a time however many pages ask meanwhile; a smaller one is counted on every page, so a
listing of a tenant's own VMs stays exact to the write. A large total may thus be up to
:data:`TTL` seconds old (plus the time of one count): what it reports, a client cannot tell from
a count that raced a write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["CACHED_FROM", "TTL", "Totals"]

#: Totals at least this large are kept for TTL seconds.
CACHED_FROM = 10_000
TTL = 1.0
#: Listings remembered at most (past it, all are forgotten).
MAX_ENTRIES = 1024


class Totals:
    """The totals of one store's listings (one per process)."""

    def __init__(self, *, cached_from: int = CACHED_FROM, ttl: float = TTL) -> None:
        self._cached_from = cached_from
        self._ttl = ttl
        self._kept: dict[Hashable, tuple[float, int]] = {}
        self._counting: dict[Hashable, asyncio.Task[int]] = {}

    async def total(self, key: Hashable, count: Callable[[], Awaitable[int]]) -> int:
        """The total of the listing ``key``, from ``count`` unless a large one is fresh."""
        kept = self._kept.get(key)
        if kept is None:
            return self._keep(key, await count())
        if kept[0] > time.monotonic():
            return kept[1]
        # Large and stale: one count refreshes it for every page waiting meanwhile.
        task = self._counting.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(key, count))
            self._counting[key] = task
            task.add_done_callback(lambda _: self._counting.pop(key, None))
        return await asyncio.shield(task)

    async def _refresh(self, key: Hashable, count: Callable[[], Awaitable[int]]) -> int:
        return self._keep(key, await count())

    def _keep(self, key: Hashable, n: int) -> int:
        if n < self._cached_from:
            self._kept.pop(key, None)
            return n
        if len(self._kept) >= MAX_ENTRIES:
            self._kept.clear()
        self._kept[key] = (time.monotonic() + self._ttl, n)
        return n
