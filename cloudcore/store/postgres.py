"""The PostgreSQL store (production): asyncpg with a connection pool.

asyncpg prepares and caches each statement per connection, so a compare-and-set update is one
round trip. When the server goes away, calls raise BackendUnavailable; the pool drops its dead
connections and opens new ones once the server is back, so the node recovers without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import asyncpg.exceptions as pg  # type: ignore[import-untyped]

from cloudcore.errors import (
    AlreadyExists,
    BackendUnavailable,
    CloudcoreError,
    InvalidRecord,
    SchemaMismatch,
    VersionConflict,
)
from cloudcore.logging import get_logger
from cloudcore.store._conn import Conn
from cloudcore.store._pgbatch import CasBatcher
from cloudcore.store._pgops import PgOps
from cloudcore.store._pgpool import Pool
from cloudcore.store._pgsteps import StepBatcher
from cloudcore.store._sql import SqlStore
from cloudcore.store._table import Table
from cloudcore.store.records import OutboxEvent, Record

__all__ = ["PostgresStore", "redact_dsn"]

_log = get_logger("cloudcore.store.postgres")

R = TypeVar("R", bound=Record)

# Errors that mean "the server cannot be reached or is going away": retry later. Among them
# InternalClientError ("cannot switch to state 12; another operation (2) is in progress"): no
# second borrower, but a connection whose server sent its FATAL "terminating connection" while
# it sat idle in the pool; asyncpg's protocol is then stuck consuming an error, and the socket's
# end has not been read yet, so the connection does not look closed. The call fails before
# anything is sent; the connection is dropped with the other idle ones (see _failed).
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    pg.PostgresConnectionError,
    pg.OperatorInterventionError,
    pg.InsufficientResourcesError,
    pg.InterfaceError,
    pg.InternalClientError,
)
_DRIVER = (*_UNAVAILABLE, pg.PostgresError)
_SCHEMA_LOCK = 0x636C6F7564  # "cloud": the advisory lock that serialises upgrades


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``, fit for logs and messages."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password=)\S+", r"\1***", dsn)


def _translate(exc: Exception, where: str) -> CloudcoreError:
    if isinstance(exc, pg.UniqueViolationError):
        return AlreadyExists(f"already stored: {exc.detail or exc}")
    if isinstance(exc, pg.IntegrityConstraintViolationError | pg.DataError):
        detail = f" ({exc.detail})" if getattr(exc, "detail", None) else ""
        return InvalidRecord(f"refused by the database: {exc}{detail}")
    if isinstance(exc, pg.UndefinedTableError):
        return SchemaMismatch(
            f"the database has no cloudcore schema ({exc}): run `cloudcore db upgrade`"
        )
    if isinstance(exc, pg.TransactionRollbackError):  # deadlock, serialization failure
        return VersionConflict(f"a concurrent transaction got in the way ({exc}): try again")
    if isinstance(exc, _UNAVAILABLE):
        return BackendUnavailable(
            f"PostgreSQL at {where} is unavailable: {type(exc).__name__}: {exc}"
        )
    return CloudcoreError(f"PostgreSQL at {where} refused the call: {type(exc).__name__}: {exc}")


class PostgresStore(PgOps, SqlStore):
    """A :class:`~cloudcore.store.base.Store` on PostgreSQL. Make one with :meth:`connect`."""

    dialect = "postgres"
    _row_lock = " FOR UPDATE"

    def __init__(self, pool: Pool, where: str, *, group_commit: bool = True) -> None:
        self._pool = pool
        self._where = where
        self._outbox_listeners = []
        self._batcher = CasBatcher(self._writer, super()._compare_and_set) if group_commit else None
        if group_commit:
            self._steps = StepBatcher(self._writer, self._append_one, self._update_one)

    async def _compare_and_set(
        self,
        table: Table[Any],
        columns: tuple[str, ...],
        id: str,
        expected_version: int,
        values: list[Any],
        events: Sequence[OutboxEvent] = (),
    ) -> Any:
        if self._batcher is None:
            return await super()._compare_and_set(
                table, columns, id, expected_version, values, events
            )
        # Concurrent updates share statements and commits (group commit): see _pgbatch.
        return await self._batcher.update(table, columns, id, expected_version, values, events)

    async def remove_from_outbox(self, seqs: Sequence[int]) -> None:
        if seqs:  # one prepared statement whatever the count
            async with self._writer() as conn:
                await conn.execute("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", list(seqs))

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        pool_size: int = 16,
        command_timeout: float = 10.0,
        group_commit: bool = True,
    ) -> PostgresStore:
        """Connect to ``dsn`` (one connection now, up to ``pool_size`` on demand).

        ``group_commit`` lets concurrent compare-and-set updates share statements and commits
        (see ``_pgbatch``); False sends each on its own. Raises BackendUnavailable if the server
        cannot be reached.
        """
        where = redact_dsn(dsn)

        async def connect() -> Any:
            return await asyncpg.connect(
                dsn, timeout=command_timeout, command_timeout=command_timeout
            )

        pool = Pool(connect, pool_size)
        store = cls(pool, where, group_commit=group_commit)
        async with store._reader() as conn:  # fail now, not at the first call
            await conn.fetchrow("SELECT 1")
        _log.info("store.opened", backend="postgres", dsn=where, pool_size=pool_size)
        return store

    def _reader(self) -> _Call:
        return _Call(self, self._pool.lease())

    def _writer(self) -> _Call:
        return _Call(self, self._pool.lease())

    def _transaction(self) -> _Call:
        return _Call(self, self._pool.lease(transaction=True))

    def _failed(self, exc: Exception) -> CloudcoreError:
        if isinstance(exc, _UNAVAILABLE):
            # One dead connection means the server went away: the idle ones are dead too.
            self._pool.discard_idle()
            _log.warning("store.unavailable", backend="postgres", error=type(exc).__name__)
        return _translate(exc, self._where)

    async def _schema_table_exists(self, conn: Conn) -> bool:
        row = await conn.fetchrow("SELECT to_regclass('cloudcore_schema') IS NOT NULL AS e")
        return bool(row["e"])

    async def _lock_schema(self, conn: Conn) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)

    async def close(self) -> None:
        await self._pool.close()


class _Call:
    """A borrowed connection whose driver errors leave as cloudcore errors."""

    __slots__ = ("_lease", "_store")

    def __init__(self, store: PostgresStore, lease: Any) -> None:
        self._store = store
        self._lease = lease

    async def __aenter__(self) -> Conn:
        try:
            conn: Conn = await self._lease.__aenter__()
        except _DRIVER as exc:
            raise self._store._failed(exc) from exc
        return conn

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._lease.__aexit__(kind, exc, tb)
        except _DRIVER as failure:
            raise self._store._failed(failure) from failure
        if isinstance(exc, _DRIVER):
            raise self._store._failed(exc) from exc
