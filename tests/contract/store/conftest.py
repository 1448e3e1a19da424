"""The store contract suite runs every test on both backends: SQLite in a temporary file and
PostgreSQL in a database of its own, created for the test run and dropped after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cloudcore.store.base import Store
from cloudcore.store.postgres import PostgresStore
from cloudcore.store.sqlite import SqliteStore
from tests.contract.store import _pg
from tests.contract.store.factory import Factory

T = TypeVar("T")

_TABLES = (
    "outbox, events, task_steps, tasks, ip_allocations, networks, templates, volume_snapshots, "
    "volumes, vms, hosts, "
    "quotas, api_tokens, users, datacenters, tenants, idempotency_keys, leases, grants"
)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A database for this test run, with the schema applied."""

    async def setup() -> str:
        dsn = await _pg.create_database()
        store = await PostgresStore.connect(dsn, pool_size=2)
        try:
            await store.upgrade()
        finally:
            await store.close()
        return dsn

    # In a thread of its own: the first test that needs it may be inside a running event loop.
    dsn = _in_thread(setup())
    yield dsn
    _in_thread(_pg.drop_database(dsn))


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store at the latest schema, on each backend in turn."""
    if request.param == "sqlite":
        backend: Store = await SqliteStore.connect(tmp_path / "cloudcore.db")
        await backend.upgrade()
    else:
        backend = await PostgresStore.connect(request.getfixturevalue("pg_dsn"), pool_size=8)
        async with backend._writer() as conn:
            await conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE")
    yield backend
    await backend.close()


@pytest.fixture
def make(store: Store) -> Factory:
    return Factory(store)
