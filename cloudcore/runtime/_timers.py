"""An actor's timers: messages it sends itself later, by key (``schedule_once`` and friends)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Timers"]


class Timers:
    """The timers of one actor, each under a key; a new timer replaces the one of that key.

    Made on an actor's first timer (most actors have none). ``deliver`` puts a message in the
    actor's mailbox; it runs in the loop's timer callback, never inside ``receive``.
    """

    __slots__ = ("_deliver", "_handles", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[Any], None]) -> None:
        self._loop = loop
        self._deliver = deliver
        self._handles: dict[Hashable, asyncio.TimerHandle] = {}

    def once(self, key: Hashable, delay: float, message: Any) -> None:
        self._set(key, self._loop.call_later(delay, self._fire_once, key, message))

    def periodic(
        self, key: Hashable, interval: float, message: Any, initial_delay: float | None
    ) -> None:
        first = self._loop.time() + (interval if initial_delay is None else initial_delay)
        self._set(
            key, self._loop.call_at(first, self._fire_periodic, key, interval, message, first)
        )

    def cancel(self, key: Hashable) -> bool:
        handle = self._handles.pop(key, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def _set(self, key: Hashable, handle: asyncio.TimerHandle) -> None:
        old = self._handles.get(key)
        if old is not None:
            old.cancel()
        self._handles[key] = handle

    def _fire_once(self, key: Hashable, message: Any) -> None:
        self._handles.pop(key, None)
        self._deliver(message)

    def _fire_periodic(self, key: Hashable, interval: float, message: Any, when: float) -> None:
        self._deliver(message)
        # Fixed rate: the next tick is one interval after this one was due, unless the loop was
        # so busy that it is already past; then one interval from now (missed ticks are skipped).
        now = self._loop.time()
        when += interval
        if when <= now:
            when = now + interval
        if key in self._handles:
            self._handles[key] = self._loop.call_at(
                when, self._fire_periodic, key, interval, message, when
            )
