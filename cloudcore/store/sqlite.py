"""The SQLite store (embedded default): one file under the node's data directory, WAL mode.

SQLite takes one writer at a time, so all writes go through one connection guarded by a lock
(a transaction holds it to the end); reads use a second connection, which WAL lets run beside
the writer. ``synchronous=NORMAL``: in WAL mode a commit survives a crash of the process; a power
cut may lose the last commits but never corrupts the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from cloudcore.errors import (
    AlreadyExists,
    BackendUnavailable,
    CloudcoreError,
    InvalidRecord,
    SchemaMismatch,
)
from cloudcore.logging import get_logger
from cloudcore.store._conn import Conn
from cloudcore.store._sql import SqlStore
from cloudcore.store.records import Record

__all__ = ["SqliteStore"]

_log = get_logger("cloudcore.store.sqlite")

R = TypeVar("R", bound=Record)

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


@lru_cache(maxsize=1024)
def _qmark(sql: str) -> str:
    # The portable SQL numbers its parameters $1, $2 ...; SQLite numbers them ?1, ?2 ...
    return re.sub(r"\$(\d+)", r"?\1", sql)


def _param(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


class _Conn:
    """asyncpg-style calls on an aiosqlite connection."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._conn.execute_fetchall(_qmark(sql), [_param(a) for a in args]))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: Any) -> Any:
        await self._conn.execute_fetchall(_qmark(sql), [_param(a) for a in args])


def _translate(exc: Exception, path: str) -> CloudcoreError:
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if text.startswith("UNIQUE"):
            return AlreadyExists(f"already stored: {text}")
        return InvalidRecord(f"refused by the database: {text}")
    if isinstance(exc, OverflowError | sqlite3.InterfaceError):
        return InvalidRecord(f"refused by the database: {text}")
    if "no such table" in text:
        return SchemaMismatch(
            f"the database has no cloudcore schema ({text}): run `cloudcore db upgrade`"
        )
    return BackendUnavailable(f"SQLite database {path} is unavailable: {text}")


class SqliteStore(SqlStore):
    """A :class:`~cloudcore.store.base.Store` in a SQLite file. Make one with :meth:`connect`."""

    dialect = "sqlite"

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: str):
        self._writer_conn = _Conn(writer)
        self._reader_conn = _Conn(reader)
        self._raw = (writer, reader)
        self._path = path
        self._lock = asyncio.Lock()
        self._outbox_listeners = []

    @classmethod
    async def connect(cls, path: str | Path) -> SqliteStore:
        """Open (and create, with its directory) the database file at ``path``. The file and
        its WAL companions are the owner's alone (0600), a directory made here too (0700)."""
        file = Path(path)
        try:
            await asyncio.to_thread(_private_files, file)
            writer = await _open(file)
            reader = await _open(file)
        except (OSError, sqlite3.Error) as exc:
            raise BackendUnavailable(f"cannot open SQLite database {file}: {exc}") from exc
        _log.info("store.opened", backend="sqlite", path=str(file))
        return cls(writer, reader, str(file))

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            yield
        except CloudcoreError:  # ours, raised inside the block (InvalidRecord is a ValueError)
            raise
        except (sqlite3.Error, OverflowError, ValueError) as exc:
            # aiosqlite raises ValueError once closed; sqlite3 raises OverflowError for big ints.
            raise _translate(exc, self._path) from exc

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[Conn]:
        async with self._translated():
            yield self._reader_conn

    @asynccontextmanager
    async def _writer(self) -> AsyncIterator[Conn]:
        async with self._lock, self._translated():
            yield self._writer_conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Conn]:
        async with self._lock, self._translated():
            conn = self._writer_conn
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                await self._roll_back()
                raise

    async def _roll_back(self) -> None:
        """End whatever transaction the writer holds. aiosqlite runs each statement in its
        thread in the order asked, even when the coroutine that asked is cancelled: a BEGIN
        (or COMMIT) whose caller was cancelled still runs, so the ROLLBACK asked after it ends
        its transaction instead of leaving it open to the next writer ("cannot start a
        transaction within a transaction"). None open: nothing to do."""
        with contextlib.suppress(sqlite3.OperationalError):
            await self._writer_conn.execute("ROLLBACK")

    async def _schema_table_exists(self, conn: Conn) -> bool:
        row = await conn.fetchrow(
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1",
            "cloudcore_schema",
        )
        return bool(row["n"])

    async def close(self) -> None:
        for conn in self._raw:
            with contextlib.suppress(ValueError):  # closed already
                await conn.close()


def _private_files(file: Path) -> None:
    """Create ``file`` 0600 (SQLite gives its -wal and -shm files the mode of the database
    file) and take group and other access away from an existing one and its companions."""
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for each in (file, file.with_name(file.name + "-wal"), file.with_name(file.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if each.stat().st_mode & 0o077:
                each.chmod(0o600)
                _log.warning("store.file_mode_tightened", path=str(each), mode="0600")


async def _open(file: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(file, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        await conn.execute(pragma)
    return conn
