"""Waiting in tests for state that no event announces: poll with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["eventually"]


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
