"""The scheduler against real stores: SQLite in a temporary file, and PostgreSQL in a database
of this test module's own (127.0.0.1:5432, or ``CLOUDCORE_TEST_POSTGRES``), dropped after it.

Every test makes its own datacenter, hosts and VMs with fresh ids, so tests sharing the
PostgreSQL database do not see each other's records.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from actors.scheduler import resume_on_conflict
from cloudcore.config import RuntimeSettings
from cloudcore.runtime import ActorSystem, SupervisorStrategy
from cloudcore.store.base import Store
from cloudcore.store.postgres import PostgresStore
from cloudcore.store.sqlite import SqliteStore

_ADMIN_DSN = os.environ.get(
    "CLOUDCORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def scheduler_pg_dsn() -> Iterator[str]:
    """A PostgreSQL database for this module, at the latest schema; dropped afterwards."""
    name = f"cc_sched_{secrets.token_hex(6)}"
    dsn = urlunsplit(urlsplit(_ADMIN_DSN)._replace(path=f"/{name}"))

    async def create() -> None:
        await _admin(f'CREATE DATABASE "{name}"')
        store = await PostgresStore.connect(dsn, pool_size=1)
        try:
            await store.upgrade()
        finally:
            await store.close()

    _run_aside(create())
    yield dsn
    _run_aside(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _run_aside(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on a loop of its own in another thread: the first test that asks for the
    database is already inside its own running loop, and the database outlives that loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A store at the latest schema, on each backend in turn."""
    backend: Store
    if request.param == "sqlite":
        backend = await SqliteStore.connect(tmp_path / "cloudcore.db")
        await backend.upgrade()
    else:
        backend = await PostgresStore.connect(
            request.getfixturevalue("scheduler_pg_dsn"), pool_size=8
        )
    yield backend
    await backend.close()


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    """An actor system whose top-level actors resume on refusals, as a datacenter would."""
    strategy = SupervisorStrategy(decider=resume_on_conflict)
    system = ActorSystem(
        "test-node", RuntimeSettings(ask_timeout=30.0, shutdown_timeout=5.0), user_strategy=strategy
    )
    yield system
    await system.shutdown()


class WatchingStore:
    """A store that remembers every host record ``place_vm`` returned and every claim refused,
    so a test can check the claimed amounts at each step, not only at the end."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.placed_hosts: list[Any] = []
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def place_vm(self, *args: Any, **kwargs: Any) -> Any:
        from cloudcore.errors import InsufficientCapacity

        try:
            vm, host = await self._store.place_vm(*args, **kwargs)
        except InsufficientCapacity:
            self.refused += 1
            raise
        self.placed_hosts.append(host)
        return vm, host
