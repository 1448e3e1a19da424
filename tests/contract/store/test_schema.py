"""Versioned schema: a node refuses a schema it does not know; `db upgrade` brings it level;
what was committed is there after the store is opened again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudcore.config import Settings, StoreSettings
from cloudcore.errors import SchemaMismatch
from cloudcore.store import open_store
from cloudcore.store.migrations import LATEST
from cloudcore.store.records import Tenant, new_id
from tests.contract.store import _pg


@pytest.fixture(params=["sqlite", "postgres"])
async def empty(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings pointing at an empty database of each backend."""
    if request.param == "sqlite":
        yield Settings(store=StoreSettings(sqlite_path=str(tmp_path / "fresh.db")))
        return
    dsn = await _pg.create_database()
    try:
        yield Settings(store=StoreSettings(backend="postgres", postgres_dsn=dsn, pool_size=2))
    finally:
        await _pg.drop_database(dsn)


async def test_an_empty_database_is_refused_with_the_command_to_run(empty: Settings) -> None:
    with pytest.raises(SchemaMismatch, match="run `cloudcore db upgrade`"):
        await open_store(empty)


async def test_upgrade_brings_the_schema_to_the_latest_version_once(empty: Settings) -> None:
    store = await open_store(empty, upgrade=True)
    try:
        assert await store.schema_version() == LATEST
        assert await store.upgrade() == []
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(empty: Settings) -> None:
    store = await open_store(empty, upgrade=True)
    try:
        async with store._writer() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "INSERT INTO cloudcore_schema (version, description, applied_at) "
                "VALUES ($1, 'from the future', '2030-01-01T00:00:00+00:00')",
                LATEST + 1,
            )
    finally:
        await store.close()
    with pytest.raises(SchemaMismatch, match="newer"):
        await open_store(empty)


async def test_committed_records_are_there_when_the_store_is_opened_again(
    empty: Settings,
) -> None:
    store = await open_store(empty, upgrade=True)
    tenant = await store.create(Tenant(id=new_id(), name="acme"))
    await store.close()

    again = await open_store(empty)
    try:
        assert await again.get(Tenant, tenant.id) == tenant
    finally:
        await again.close()
