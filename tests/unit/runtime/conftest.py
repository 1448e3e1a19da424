"""Fixtures for the runtime tests: a fresh actor system and a recorder to await events on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from cloudcore.config import RuntimeSettings
from cloudcore.runtime import ActorSystem


class Recorder:
    """A list that actors append to and tests wait on, instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def until(self, predicate: Callable[[list[Any]], bool], timeout: float = 2.0) -> None:
        """Wait until ``predicate(items)`` holds; fail the test after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()

    async def count(self, item: Any, n: int = 1, timeout: float = 2.0) -> None:
        await self.until(lambda items: items.count(item) >= n, timeout)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    system = ActorSystem("test-node", RuntimeSettings(ask_timeout=2.0, shutdown_timeout=2.0))
    yield system
    await system.shutdown()
