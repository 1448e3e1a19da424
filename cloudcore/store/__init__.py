"""The orchestrator's durable state: :class:`Store` and :func:`open_store`.

The records it keeps are in :mod:`cloudcore.store.records`.
"""

from __future__ import annotations

from pathlib import Path

from cloudcore.config import Settings
from cloudcore.store import migrations
from cloudcore.store._table import encode_cursor
from cloudcore.store.base import Store

__all__ = ["Store", "connect_store", "encode_cursor", "open_store", "sqlite_path"]


def sqlite_path(settings: Settings) -> Path:
    """The SQLite file: ``store.sqlite_path``, or ``cloudcore.db`` under ``node.data_dir``."""
    return Path(settings.store.sqlite_path or Path(settings.node.data_dir) / "cloudcore.db")


async def connect_store(settings: Settings) -> Store:
    """Connect the configured store without looking at its schema (``cloudcore db`` does).

    Raises BackendUnavailable if the database cannot be reached.
    """
    conf = settings.store
    if conf.backend == "postgres":
        from cloudcore.store.postgres import PostgresStore

        return await PostgresStore.connect(
            conf.postgres_dsn, pool_size=conf.pool_size, command_timeout=conf.command_timeout
        )
    from cloudcore.store.sqlite import SqliteStore

    return await SqliteStore.connect(sqlite_path(settings))


async def open_store(settings: Settings, *, upgrade: bool | None = None) -> Store:
    """Connect the configured store and check its schema.

    ``upgrade`` (default: ``store.auto_upgrade``) applies missing migrations first; otherwise a
    schema older or newer than this code raises SchemaMismatch saying what to run. Raises
    BackendUnavailable if the database cannot be reached.
    """
    store = await connect_store(settings)
    try:
        if settings.store.auto_upgrade if upgrade is None else upgrade:
            await store.upgrade()
        migrations.check_version(await store.schema_version())
    except BaseException:
        await store.close()
        raise
    return store
