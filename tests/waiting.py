"""Waiting in tests for state that no event announces: poll with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["eventually", "never"]


async def eventually(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` (plain or async) until it returns something truthy, and return that;
    TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)


async def never(predicate: Callable[[], Any], within: float, interval: float = 0.02) -> None:
    """Wait ``within`` seconds for something that must not happen: AssertionError as soon as
    ``predicate`` (plain or async) returns something truthy. The bounded wait is the test (a
    late duplicate, a timer that should be gone), not a way to let something finish."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        assert not value, f"happened within {within} s: {value!r}"
        if loop.time() >= deadline:
            return
        await asyncio.sleep(min(interval, max(deadline - loop.time(), 0)))
