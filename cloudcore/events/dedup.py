"""Skipping events already seen: the bus delivers at least once, so an event may come twice.

A consumer keeps the ids of the events it saw last (a bounded window: a relay publishes a copy
again soon after the original, never thousands of events later) and skips one it has seen.
Events without an id (written before ids existed) always pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator

from cloudcore.events.base import Event

__all__ = ["SeenIds", "deduplicated"]

#: How many ids a consumer remembers by default.
WINDOW = 10_000


class SeenIds:
    """The ids of the newest ``capacity`` events seen (memory bounded by ``capacity``)."""

    def __init__(self, capacity: int = WINDOW) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def first_time(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen (and remember it); False for a copy."""
        if not event_id:
            return True
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


async def deduplicated(
    events: AsyncIterator[Event], seen: SeenIds | None = None
) -> AsyncIterator[Event]:
    """``events`` without the copies of those already seen (in ``seen``, shared by the caller
    across subscriptions if it resubscribes)."""
    seen = SeenIds() if seen is None else seen
    async for event in events:
        if seen.first_time(event.id):
            yield event
