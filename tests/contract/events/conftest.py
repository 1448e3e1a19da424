"""The event bus contract suite runs every test on both buses: in-process, and Redis Streams on
the machine's Redis under a key of its own (``CLOUDCORE_TEST_REDIS`` overrides the URL)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from cloudcore.events.base import EventBus
from cloudcore.events.local import LocalEventBus
from cloudcore.events.redis import RedisEventBus

REDIS_URL = os.environ.get("CLOUDCORE_TEST_REDIS", "redis://127.0.0.1:6379/0")

OpenBus = Callable[..., Awaitable[EventBus]]


@pytest.fixture(params=["local", "redis"])
async def open_bus(request: pytest.FixtureRequest) -> AsyncIterator[OpenBus]:
    """Opens buses of one kind (closed after the test); ``retention`` as asked."""
    opened: list[EventBus] = []
    key = f"cc_test:{secrets.token_hex(6)}:events"  # a stream of this test's own

    async def open_(retention: int = 100_000) -> EventBus:
        bus: EventBus
        if request.param == "local":
            bus = LocalEventBus(retention=retention)
        else:
            bus = await RedisEventBus.connect(REDIS_URL, stream=key, retention=retention)
        opened.append(bus)
        return bus

    yield open_
    for bus in opened:
        await bus.close()
    if request.param == "redis":
        client = aioredis.Redis.from_url(REDIS_URL)
        await client.delete(key)
        await client.aclose()


@pytest.fixture
async def bus(open_bus: OpenBus) -> EventBus:
    return await open_bus()
