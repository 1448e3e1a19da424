"""Rate limits held across API processes: two gateways counting in one Redis (a key prefix of
this test's own) share a token's budget and an address's failed authentications; with Redis
cut off each counts alone (degraded), and with it back they share again."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from cloudcore.app.gateway import Gateway, start_api
from cloudcore.app.gateway.app import bound_port
from cloudcore.app.gateway.ratelimits import RETRY_SECONDS, Counters, RateLimiter
from cloudcore.config import EventsSettings, Settings
from cloudcore.store import Store
from tests.cloud import sqlite_store  # noqa: F401 - the fixture
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api
from tests.integration.profiles.proxy import BrokerProxy
from tests.waiting import eventually

REDIS_URL = os.environ.get("CLOUDCORE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"cc-test-limits-{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{name}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _shared(tmp_path: Path, prefix: str, redis_url: str = REDIS_URL, **api: object) -> Settings:
    settings = api_settings(tmp_path, limits_backend="redis", limits_key_prefix=prefix, **api)
    events = msgspec.structs.replace(settings.events, redis_url=redis_url)
    assert isinstance(events, EventsSettings)
    return msgspec.structs.replace(settings, events=events)


@asynccontextmanager
async def second_gateway(first: ApiClient, settings: Settings) -> AsyncIterator[str]:
    """Another gateway in front of the same node, with counters of its own (as another API
    process has): its base URL."""
    gateway = Gateway.of(settings, first.system, first.orchestrator)
    runner = await start_api(gateway)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}/api/v1"
    finally:
        await runner.cleanup()


async def _status(session: aiohttp.ClientSession, url: str, token: str) -> int:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        await r.read()
        return r.status


async def test_two_gateways_on_one_redis_share_a_tokens_budget(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
    prefix: str,
) -> None:
    # 6 in any 60 s: no refill during the test.
    settings = _shared(tmp_path, prefix, rate_limit=0.1, rate_burst=6)
    async with (
        serve_api(sqlite_store, settings) as api,
        second_gateway(api, settings) as other,
        aiohttp.ClientSession() as session,
    ):
        token = api.tokens["alice"]
        statuses = [
            await _status(session, f"{base}/vms", token)
            for _ in range(6)
            for base in (api.base, other)
        ]
        # Alternating between the two: 6 in all, not 6 on each.
        assert statuses.count(200) == 6, statuses
        assert statuses[6:] == [429] * 6
        assert await _status(session, f"{other}/vms", api.tokens["bob"]) == 200  # per token


async def test_failed_authentications_on_one_gateway_throttle_the_other(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
    prefix: str,
) -> None:
    settings = _shared(tmp_path, prefix, auth_failures_per_second=0.1, auth_failure_burst=5)
    async with (
        serve_api(sqlite_store, settings) as api,
        second_gateway(api, settings) as other,
        aiohttp.ClientSession() as session,
    ):
        guesses = [await _status(session, f"{api.base}/vms", f"cc_guess{i}") for i in range(5)]
        assert guesses == [401] * 5
        # The address is over its failures everywhere: the other gateway makes no lookup.
        before = api.gateway.tokens.lookups if api.gateway else 0
        assert await _status(session, f"{other}/vms", "cc_another_guess") == 429
        assert await _status(session, f"{other}/vms", api.tokens["alice"]) == 429
        assert (api.gateway.tokens.lookups if api.gateway else 0) == before


async def test_with_redis_cut_off_each_process_counts_alone_until_it_is_back(
    prefix: str,
) -> None:
    proxy = BrokerProxy(target_port=int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    first, second = Counters(url, prefix), Counters(url, prefix)
    a = RateLimiter(0.1, 4, first)
    b = RateLimiter(0.1, 4, second)
    try:
        # Shared: 4 in all.
        waits = [await limiter.wait_time("tok") for limiter in (a, b) * 3]
        assert [w == 0 for w in waits] == [True] * 4 + [False] * 2

        proxy.cut()
        with capture_logs() as logs:
            # Degraded, not open nor closed: each process grants its own 4, then refuses.
            alone = [await a.wait_time("tok") for _ in range(5)]
        assert [w == 0 for w in alone] == [True] * 4 + [False]
        assert first.degraded
        assert [e["event"] for e in logs].count("api.limits_degraded") == 1

        proxy.heal()
        # Back after RETRY_SECONDS: the shared count (already spent) refuses again.
        await eventually(lambda: not first.degraded, timeout=RETRY_SECONDS + 5)
        assert await a.wait_time("tok") > 0
        assert not first.degraded
    finally:
        await first.close()
        await second.close()
        await proxy.close()
