"""PostgreSQL stopped and started under concurrent API load (a private cluster, never the
shared one): every answer is a success or a 503 with Retry-After, never a 500, and the API
recovers by itself."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudcore.store.postgres import PostgresStore
from tests.component.gateway.conftest import ApiClient, Reply, api_settings, serve_api
from tests.integration.state.servers import PrivatePostgres

pytestmark = pytest.mark.integration

_CLIENTS = 16


@pytest.fixture
def postgres_server() -> AsyncIterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


async def _load(api: ApiClient, n: int, who: str, stop: asyncio.Event, seen: list[Reply]) -> None:
    paths = ("/vms", "/tasks", "/hosts", "/users/me", "/datacenters", "/templates")
    i = 0
    while not stop.is_set():
        i += 1
        if i % 4 == 0:
            body = {"id": f"t{n}-{i}", "description": "made during an outage"}
            seen.append(await api.call("POST", "/tenants", "admin", body))
        else:
            seen.append(await api.call("GET", paths[i % len(paths)], who))


async def test_a_database_outage_answers_503_with_retry_after_never_500(
    postgres_server: PrivatePostgres, tmp_path: Path
) -> None:
    store = await PostgresStore.connect(postgres_server.dsn, pool_size=8, command_timeout=5)
    await store.upgrade()
    async with serve_api(store, api_settings(tmp_path)) as api:
        # Tokens checked before the outage stay cached: the load reaches the store.
        assert (await api.call("GET", "/users/me", "operator")).status == 200
        stop, seen = asyncio.Event(), list[Reply]()
        clients = [
            asyncio.create_task(_load(api, n, ("admin", "operator")[n % 2], stop, seen))
            for n in range(_CLIENTS)
        ]
        try:
            for _ in range(2):
                await asyncio.to_thread(postgres_server.stop)
                await asyncio.to_thread(postgres_server.start)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        statuses = Counter(r.status for r in seen)
        assert set(statuses) <= {200, 201, 503}, statuses
        assert all(r.headers.get("Retry-After") for r in seen if r.status == 503)
        assert statuses[503] > 0  # the outage was seen: the test did test something
        for _ in range(300):  # polling a recovering pool: there is no event to await
            if (await api.call("GET", "/vms", "admin")).status == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the API did not recover within 30 s of the restart")
    await store.close()
