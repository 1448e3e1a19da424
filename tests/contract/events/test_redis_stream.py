"""What only the Redis bus can meet: entries on the stream that other clients wrote."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest
import redis.asyncio as aioredis
import structlog
from structlog.testing import capture_logs

from cloudcore.events.base import START, Event
from cloudcore.events.redis import RedisEventBus
from tests.contract.events.conftest import REDIS_URL


@pytest.fixture
async def raw_and_bus() -> AsyncIterator[tuple[aioredis.Redis, RedisEventBus, str]]:
    key = f"cc_test:{secrets.token_hex(6)}:events"
    raw = aioredis.Redis.from_url(REDIS_URL)
    bus = await RedisEventBus.connect(REDIS_URL, stream=key, retention=1000)
    yield raw, bus, key
    await bus.close()
    await raw.delete(key)
    await raw.aclose()


async def _write_garbage(raw: aioredis.Redis, key: str) -> None:
    unknown_version = msgspec.msgpack.encode([99, "vm.x", "vm/1", None, datetime.now(UTC), {}])
    await raw.xadd(key, {b"other": b"field"})
    await raw.xadd(key, {b"e": b"\xc1 not msgpack"})
    await raw.xadd(key, {b"e": unknown_version})


async def test_corrupt_or_unknown_entries_are_logged_and_skipped(
    raw_and_bus: tuple[aioredis.Redis, RedisEventBus, str],
) -> None:
    raw, bus, key = raw_and_bus
    before = await bus.publish("vm.created", "vm/1")
    await _write_garbage(raw, key)
    after = await bus.publish("vm.started", "vm/1")

    # Whatever level an earlier test configured, let warnings through to the capture.
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    try:
        with capture_logs() as logs:
            replay = await bus.read()
            live: list[Event] = []
            async with asyncio.timeout(5):
                async for event in bus.subscribe(after=START):
                    live.append(event)
                    if len(live) == 2:
                        break
    finally:
        structlog.configure(**saved)

    assert replay == live == [before, after]
    skipped = [entry for entry in logs if entry["event"] == "event.skipped"]
    assert len(skipped) == 6
    assert any("unknown event format version 99" in entry["reason"] for entry in skipped)


async def test_a_group_acknowledges_what_it_skips_so_it_does_not_come_back(
    raw_and_bus: tuple[aioredis.Redis, RedisEventBus, str],
) -> None:
    raw, bus, key = raw_and_bus
    await _write_garbage(raw, key)
    good = await bus.publish("vm.created", "vm/2")

    got: list[Event] = []
    async with asyncio.timeout(5):
        async for event in bus.consume("janitor", "node-1", after=START):
            got.append(event)
            await bus.ack("janitor", event.position)
            break

    assert got == [good]
    pending = await raw.xpending(key, "janitor")
    assert pending["pending"] == 0
