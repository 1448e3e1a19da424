"""The orchestrator's durable state: :class:`Store` and :func:`open_store`.

The records it keeps are in :mod:`cloudcore.store.records`.
"""

from __future__ import annotations

from pathlib import Path

from cloudcore.config import Settings
from cloudcore.store.base import Store

__all__ = ["Store", "open_store", "sqlite_path"]


def sqlite_path(settings: Settings) -> Path:
    """The SQLite file: ``store.sqlite_path``, or ``cloudcore.db`` under ``node.data_dir``."""
    return Path(settings.store.sqlite_path or Path(settings.node.data_dir) / "cloudcore.db")


async def open_store(settings: Settings, *, upgrade: bool | None = None) -> Store:
    """Connect the configured store and check its schema.

    ``upgrade`` (default: ``store.auto_upgrade``) applies missing migrations first; otherwise a
    schema older or newer than this code raises SchemaMismatch saying what to run. Raises
    BackendUnavailable if the database cannot be reached.
    """
    from cloudcore.store._sql import SqlStore

    conf = settings.store
    store: SqlStore
    if conf.backend == "postgres":
        from cloudcore.store.postgres import PostgresStore

        store = await PostgresStore.connect(
            conf.postgres_dsn, pool_size=conf.pool_size, command_timeout=conf.command_timeout
        )
    else:
        from cloudcore.store.sqlite import SqliteStore

        store = await SqliteStore.connect(sqlite_path(settings))
    try:
        if conf.auto_upgrade if upgrade is None else upgrade:
            await store.upgrade()
        await store.check_schema()
    except BaseException:
        await store.close()
        raise
    return store
