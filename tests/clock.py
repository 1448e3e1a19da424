"""A clock for timer tests: the running loop's time, pushed forward at will.

``loop.time()`` becomes real monotonic time plus an offset that :meth:`LoopClock.advance`
grows, so every timer made with ``call_later``/``call_at`` (the runtime's actor timers, the
cluster's heartbeats and failure detection) fires when the pushed time reaches it, at once and
in order. Real time still passes, so waits with a deadline (``asyncio.timeout``, ask timeouts)
keep working.
"""

from __future__ import annotations

import asyncio

__all__ = ["LoopClock"]


class LoopClock:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._real = loop.time
        self.offset = 0.0
        loop.time = self.time  # type: ignore[method-assign]  # shadows the method on this loop

    def time(self) -> float:
        return self._real() + self.offset

    async def advance(self, seconds: float) -> None:
        """Move the time ``seconds`` forward; return once every timer due by then has run.

        A callback at the new time sorts after every timer due before it, and the loop runs
        due timers in time order, so when it wakes us they have all run (and what they sent to
        an actor is in its mailbox ahead of anything we send next)."""
        self.offset += seconds
        due = self._loop.create_future()
        self._loop.call_at(self.time(), due.set_result, None)
        await due

    def restore(self) -> None:
        del self._loop.time  # type: ignore[method-assign]
