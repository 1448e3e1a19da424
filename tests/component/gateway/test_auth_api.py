"""Authentication under attack: failed attempts are rate-limited by client address, unknown
tokens are remembered briefly, and neither costs the store a query a request."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudcore.errors import BackendUnavailable
from cloudcore.store import Store
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api


@pytest.fixture
async def guarded(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[ApiClient]:
    settings = api_settings(tmp_path, auth_failure_burst=20, auth_failures_per_second=1.0)
    async with serve_api(sqlite_store, settings) as client:
        yield client


def _lookups(api: ApiClient) -> int:
    assert api.gateway is not None
    return api.gateway.tokens.lookups


async def test_a_thousand_wrong_tokens_cost_at_most_the_burst_in_queries(
    guarded: ApiClient,
) -> None:
    before = _lookups(guarded)
    started = time.monotonic()
    replies = await asyncio.gather(
        *(guarded.call("GET", "/users/me", f"cc_wrong{i:04d}") for i in range(1000))
    )
    # The burst of 20, and what refilled at 1 a second while the thousand were answered.
    allowed = 20 + math.ceil(time.monotonic() - started)
    statuses = [r.status for r in replies]
    assert set(statuses) == {401, 429}
    assert statuses.count(401) <= allowed
    limited = next(r for r in replies if r.status == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.error_code == "rate_limited"
    assert _lookups(guarded) - before <= allowed


async def test_a_wrong_token_retried_is_looked_up_once(api: ApiClient) -> None:
    before = _lookups(api)
    for _ in range(50):
        assert (await api.call("GET", "/users/me", "cc_not_a_token")).status == 401
    assert _lookups(api) - before == 1


async def test_a_good_token_still_works_beside_the_guessing(guarded: ApiClient) -> None:
    for i in range(30):
        await guarded.call("GET", "/users/me", f"cc_guess{i}")
    # The address is over its failures: even a good token waits (no lookup is made at all).
    assert (await guarded.call("GET", "/users/me", "alice")).status == 429


async def test_lookups_the_store_cannot_answer_are_not_failed_authentications(
    guarded: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL down: each lookup raises BackendUnavailable (503), more times than the burst.
    store = guarded.store

    async def unavailable(*args: object, **kwargs: object) -> object:
        raise BackendUnavailable("the database is down (test)")

    with monkeypatch.context() as patch:
        patch.setattr(store, "list", unavailable)
        for i in range(30):
            r = await guarded.call("GET", "/users/me", f"cc_outage{i}")
            assert r.status == 503, r.body
    # Back up: the clients' address has no failures counted against it.
    assert (await guarded.call("GET", "/users/me", "alice")).status == 200


async def test_a_client_opening_with_many_requests_at_once_costs_one_lookup(
    guarded: ApiClient,
) -> None:
    assert guarded.gateway is not None
    guarded.gateway.tokens.forget()
    before = _lookups(guarded)
    # More at once than the failed-authentication burst (20): one lookup, admitted once.
    replies = await asyncio.gather(*(guarded.call("GET", "/users/me", "alice") for _ in range(50)))
    assert {r.status for r in replies} == {200}, [r.body for r in replies if r.status != 200][:1]
    assert _lookups(guarded) - before == 1
