"""The in-process event bus (embedded default): a bounded, ordered log in memory.

Same semantics as the Redis bus: positions, replay, retention (``PositionExpired`` behind it),
fan-out subscriptions and consumer groups with acknowledgement. Events are stored in their wire
form, so what the Redis bus would refuse to encode is refused here too. Nothing survives the
process.
"""

from __future__ import annotations

import asyncio
import bisect
import time as _time
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from cloudcore.errors import BusClosed, InvalidRecord, PositionExpired
from cloudcore.events._wire import (
    decode_event,
    encode_event,
    normalize_position,
    position,
)
from cloudcore.events.base import START, Event, EventBus, EventFilter
from cloudcore.store.records import new_id

__all__ = ["LocalEventBus"]


class _Group:
    def __init__(self, last: str) -> None:
        self.last = last
        self.pending: dict[str, dict[str, Event]] = {}


class LocalEventBus(EventBus):
    """An :class:`EventBus` in this process, keeping the newest ``retention`` events."""

    def __init__(self, retention: int = 100_000) -> None:
        if retention < 1:
            raise InvalidRecord("retention must be >= 1")
        self._retention = retention
        self._positions: list[str] = []
        self._events: list[Event] = []
        self._trimmed = START  # newest position dropped by retention
        self._last = (0, 0)
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Event()
        self._closed = False

    async def publish(
        self,
        type: str,
        subject: str,
        *,
        tenant: str | None = None,
        data: Mapping[str, Any] | None = None,
        id: str | None = None,
        time: datetime | None = None,
    ) -> Event:
        self._check_open()
        payload = encode_event(
            type, subject, tenant, time or datetime.now(UTC), data, id or new_id("evt-")
        )
        ms = _time.time_ns() // 1_000_000
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        at = position(*self._last)
        event = decode_event(payload, at)
        self._positions.append(at)
        self._events.append(event)
        if len(self._events) > self._retention * 1.1:  # trim in steps, like MAXLEN ~
            drop = len(self._events) - self._retention
            self._trimmed = self._positions[drop - 1]
            del self._positions[:drop], self._events[:drop]
        self._changed.set()
        self._changed = asyncio.Event()
        return event

    def _after(self, after: str, limit: int) -> list[Event]:
        after = normalize_position(after)
        if after < self._trimmed and after != START:
            raise PositionExpired(
                f"events after {after} were dropped (retention {self._retention}); "
                "resynchronise and subscribe from the latest position"
            )
        start = bisect.bisect_right(self._positions, after)
        return self._events[start : start + limit]

    async def read(self, *, after: str = START, limit: int = 1000) -> list[Event]:
        return self._after(after, limit)

    async def read_back(self, *, before: str | None = None, limit: int = 1000) -> list[Event]:
        end = len(self._positions)
        if before is not None:
            end = bisect.bisect_left(self._positions, normalize_position(before))
        return self._events[max(0, end - limit) : end][::-1]

    async def subscribe(
        self,
        *,
        after: str | None = None,
        types: Collection[str] | None = None,
        subject_prefix: str | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[Event]:
        self._check_open()
        wanted = EventFilter.of(types, subject_prefix, tenant)
        cursor = await self.last_position() if after is None else after
        while not self._closed:
            changed = self._changed
            batch = self._after(cursor, 1000)
            for event in batch:
                cursor = event.position
                if wanted.matches(event):
                    yield event
            if not batch:
                await changed.wait()
        raise BusClosed("the event bus is closed")

    async def consume(
        self, group: str, consumer: str, *, after: str | None = None
    ) -> AsyncIterator[Event]:
        self._check_open()
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _Group(
                await self.last_position() if after is None else after
            )
        mine = state.pending.setdefault(consumer, {})
        for event in list(mine.values()):  # delivered before, never acknowledged
            yield event
        while not self._closed:
            changed = self._changed
            batch = self._after(state.last, 1)
            if not batch:
                await changed.wait()
                continue
            event = batch[0]
            state.last = event.position
            mine[event.position] = event
            yield event
        raise BusClosed("the event bus is closed")

    async def ack(self, group: str, *positions: str) -> None:
        state = self._groups.get(group)
        if state is None:
            return
        for pending in state.pending.values():
            for at in positions:
                pending.pop(at, None)

    async def last_position(self) -> str:
        return self._positions[-1] if self._positions else START

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the event bus is closed")

    async def close(self) -> None:
        self._closed = True
        self._changed.set()
