"""The store over SQL, common to PostgreSQL and SQLite.

A backend supplies three ways to reach its database (:meth:`SqlStore._reader`,
:meth:`SqlStore._writer`, :meth:`SqlStore._transaction`), each yielding a :class:`Conn` and
translating its driver's errors into cloudcore's; everything else is here, written once with
``$n`` placeholders and portable SQL (``RETURNING``, ``ON CONFLICT``), so both backends run the
same statements and the same contract suite.
"""

from __future__ import annotations

import builtins
import functools
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import msgspec

from cloudcore.errors import Conflict, InvalidRecord, NotFound, VersionConflict
from cloudcore.logging import get_logger
from cloudcore.store import _outbox, migrations
from cloudcore.store._accounting import AccountingOps
from cloudcore.store._claims import ClaimOps
from cloudcore.store._conn import Conn, check_limit, now
from cloudcore.store._idempotency import IdempotencyOps
from cloudcore.store._ipam import IpamOps
from cloudcore.store._leases import LeaseOps
from cloudcore.store._outbox import OutboxOps
from cloudcore.store._table import Table, decode_cursor, encode_cursor, table_of, validate
from cloudcore.store._totals import Totals
from cloudcore.store.base import Store
from cloudcore.store.listing import (
    Not,
    Order,
    decode_sorted_cursor,
    encode_sorted_cursor,
    is_time,
)
from cloudcore.store.records import OutboxEvent, Page, Record

__all__ = ["SqlStore"]

R = TypeVar("R", bound=Record)

_log = get_logger("cloudcore.store")


class SqlStore(ClaimOps, AccountingOps, IpamOps, IdempotencyOps, LeaseOps, OutboxOps, Store):
    """Store operations in portable SQL; subclasses provide connections and the dialect."""

    dialect: migrations.Dialect

    @abstractmethod
    async def _schema_table_exists(self, conn: Conn) -> bool: ...

    async def _lock_schema(self, conn: Conn) -> None:
        """Serialise concurrent upgrades (inside the upgrade transaction)."""

    # -- generic records -------------------------------------------------------------------

    async def create(self, record: R, *, events: Sequence[OutboxEvent] = ()) -> R:
        table = table_of(type(record))
        stamp = now()
        stored = msgspec.structs.replace(
            validate(record), version=1, created_at=stamp, updated_at=stamp
        )
        try:
            if not events:
                async with self._writer() as conn:
                    await conn.execute(table.insert_sql, *table.encode(stored))
                return stored
            stamped = _outbox.stamp(events, stamp)
            async with self._transaction() as conn:
                await conn.execute(table.insert_sql, *table.encode(stored))
                await _outbox.insert(conn, stamped)
        except InvalidRecord:
            await self._name_missing_reference(table, stored)
            raise
        self._outbox_written()
        return stored

    async def get(self, kind: type[R], id: str, /) -> R:
        table = table_of(kind)
        async with self._reader() as conn:
            row = await conn.fetchrow(table.get_sql, id)
        if row is None:
            raise NotFound(f"{table.label} {id!r} not found")
        return table.decode(row)

    async def count_by(self, kind: type[R], field: str, /) -> dict[str, int]:
        table = table_of(kind)
        table.check_filters({field: None})  # the field is whitelisted: safe to name in SQL
        async with self._reader() as conn:
            rows = await conn.fetch(
                f"SELECT {field} AS value, count(*) AS n FROM {table.name} GROUP BY {field}"
            )
        return {("" if r["value"] is None else str(r["value"])): int(r["n"]) for r in rows}

    async def list(
        self,
        kind: type[R],
        /,
        *,
        where: Mapping[str, object] | None = None,
        after: str | None = None,
        limit: int = 100,
        order: Order | None = None,
        count: bool = False,
    ) -> Page[R]:
        table = table_of(kind)
        where = where or {}
        order = order or Order()
        table.check_filters(where)
        table.check_order(order)
        check_limit(limit)
        filters, args = _filters(where)
        counted = await self._total(table, filters, args) if count else None
        async with self._reader() as conn:
            if after is not None:
                args += _cursor_args(table, order, decode_cursor(after))
            args.append(limit + 1)
            rows = await conn.fetch(table.list_sql(filters, order, after is not None), *args)
        items = [table.decode(r) for r in rows[:limit]]
        more = len(rows) > limit
        cursor = _next_cursor(order, items[-1]) if more else None
        return Page(items=items, next_cursor=cursor, total=counted)

    @functools.cached_property
    def _totals(self) -> Totals:
        return Totals()

    async def _total(
        self, table: Table[Any], filters: tuple[tuple[str, str], ...], args: builtins.list[Any]
    ) -> int:
        """How many rows ``filters`` match (a large total is kept a moment: see _totals)."""

        async def count() -> int:
            async with self._reader() as conn:
                row = await conn.fetchrow(table.count_sql(filters), *args)
            return int(row["n"])

        try:
            key = (table.name, filters, tuple(args))
            hash(key)
        except TypeError:  # a filter value that cannot be a key: counted every time
            return await count()
        return await self._totals.total(key, count)

    async def update(
        self,
        kind: type[R],
        id: str,
        /,
        *,
        expected_version: int,
        events: Sequence[OutboxEvent] = (),
        **changes: Any,
    ) -> R:
        table = table_of(kind)
        columns, values = table.encode_changes(changes)
        stamped = _outbox.stamp(events)
        row = await self._compare_and_set(table, columns, id, expected_version, values, stamped)
        if row is None:
            async with self._reader() as conn:
                await self._explain_miss(conn, table.name, table.label, id, expected_version)
        if stamped:
            self._outbox_written()
        return table.decode(row)

    async def _compare_and_set(
        self,
        table: Table[Any],
        columns: tuple[str, ...],
        id: str,
        expected_version: int,
        values: builtins.list[Any],
        events: Sequence[OutboxEvent] = (),
    ) -> Any:
        """The updated row, or None if no row has that id and version (then no event is
        written). One statement, or with ``events`` one transaction."""
        sql = table.update_sql(columns)
        if not events:
            async with self._writer() as conn:
                return await conn.fetchrow(sql, id, expected_version, now(), *values)
        async with self._transaction() as conn:
            row = await conn.fetchrow(sql, id, expected_version, now(), *values)
            if row is not None:
                await _outbox.insert(conn, events)
            return row

    async def delete(
        self, kind: type[R], id: str, /, *, expected_version: int | None = None
    ) -> None:
        table = table_of(kind)
        try:
            async with self._writer() as conn:
                args: tuple[Any, ...]
                if expected_version is None:
                    sql, args = f"DELETE FROM {table.name} WHERE id = $1 RETURNING id", (id,)
                else:
                    sql = f"DELETE FROM {table.name} WHERE id = $1 AND version = $2 RETURNING id"
                    args = (id, expected_version)
                if await conn.fetchrow(sql, *args) is None:
                    await self._explain_miss(conn, table.name, table.label, id, expected_version)
        except InvalidRecord as exc:
            raise Conflict(f"{table.label} {id!r} is still referenced: {exc}") from exc

    async def _explain_miss(
        self, conn: Conn, table: str, label: str, id: str, expected: int | None
    ) -> NoReturn:
        """Raise the reason a compare-and-set touched no row."""
        row = await conn.fetchrow(f"SELECT version FROM {table} WHERE id = $1", id)
        if row is None:
            raise NotFound(f"{label} {id!r} not found")
        raise VersionConflict(
            f"{label} {id!r} is at version {row['version']}, not {expected}: read it again"
        )

    # -- schema ---------------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self._reader() as conn:
            return await self._read_version(conn)

    async def _read_version(self, conn: Conn) -> int:
        if not await self._schema_table_exists(conn):
            return 0
        row = await conn.fetchrow("SELECT max(version) AS v FROM cloudcore_schema")
        return int(row["v"] or 0)

    async def _applied(self, conn: Conn) -> set[int]:
        if not await self._schema_table_exists(conn):
            return set()
        return {int(r["version"]) for r in await conn.fetch("SELECT version FROM cloudcore_schema")}

    async def upgrade(self) -> builtins.list[int]:
        applied: builtins.list[int] = []
        for migration in migrations.MIGRATIONS:
            async with self._transaction() as conn:
                await self._lock_schema(conn)
                current = await self._read_version(conn)
                if current > migrations.LATEST:
                    migrations.check_version(current)
                # By the versions recorded, not the highest: numbers are handed out per change,
                # so a database may hold 1 and 3 and still lack 2.
                if migration.version in await self._applied(conn):
                    continue
                for statement in migrations.statements(migration, self.dialect):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO cloudcore_schema (version, description, applied_at) "
                    "VALUES ($1, $2, $3)",
                    migration.version,
                    migration.description,
                    now(),
                )
            _log.info(
                "store.migrated", version=migration.version, description=migration.description
            )
            applied.append(migration.version)
        return applied

    async def check_schema(self) -> None:
        """Raise SchemaMismatch unless the database is at the version this code knows."""
        migrations.check_version(await self.schema_version())


def _filters(where: Mapping[str, object]) -> tuple[tuple[tuple[str, str], ...], list[Any]]:
    """(column, how) in column order, and the parameters they take."""
    filters: builtins.list[tuple[str, str]] = []
    args: builtins.list[Any] = []
    for column in sorted(where):
        value = where[column]
        if value is None:
            filters.append((column, "null"))
            continue
        negated = isinstance(value, Not)
        filters.append((column, "<>" if negated else "="))
        args.append(msgspec.to_builtins(value.value if isinstance(value, Not) else value))
    return tuple(filters), args


def _cursor_args(table: Table[Any], order: Order, position: str) -> builtins.list[Any]:
    if order.field == "id":
        return [position]
    time = is_time(table.types[order.field])
    value, last_id = decode_sorted_cursor(position, order, time)
    return [value, last_id]


def _next_cursor(order: Order, last: Record) -> str:
    if order.field == "id":
        return encode_cursor(last.id)
    return encode_sorted_cursor(getattr(last, order.field), last.id)
