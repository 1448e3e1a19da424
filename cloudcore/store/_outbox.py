"""The transactional outbox: events written in the transaction of the change that causes them.

A write that carries events stamps them (:func:`stamp`: a new id, the time) before it starts,
inserts them with :func:`insert` on the connection of its own transaction, and calls
:meth:`OutboxOps._outbox_written` once committed, which wakes the relay
(:class:`cloudcore.events.relay.OutboxRelay`). The relay reads the outbox in ``seq`` order,
publishes, and removes what it published. A backend's new transactional method carries events
the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import msgspec

from cloudcore.errors import InvalidRecord
from cloudcore.store._conn import Conn, SqlBase, check_limit, now
from cloudcore.store._table import validate
from cloudcore.store.records import OutboxEvent, new_id

__all__ = [
    "OutboxOps",
    "batch_args",
    "batch_sql",
    "event_arrays",
    "insert",
    "stamp",
    "unnest_sql",
]

_COLS = "seq, id, time, type, subject, tenant_id, data"
_INSERT = (
    "INSERT INTO outbox (id, time, type, subject, tenant_id, data) VALUES ($1, $2, $3, $4, $5, $6)"
)


def stamp(events: Iterable[OutboxEvent], at: datetime | None = None) -> list[OutboxEvent]:
    """``events`` checked (InvalidRecord names the field) with their id and time set."""
    at = at or now()
    stamped = []
    for event in events:
        checked = validate(event)
        try:
            msgspec.json.encode(checked.data)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidRecord(f"event {checked.type} data cannot be encoded: {exc}") from None
        stamped.append(msgspec.structs.replace(checked, id=new_id("evt-"), time=at, seq=0))
    return stamped


def _row(event: OutboxEvent) -> tuple[Any, ...]:
    data = msgspec.json.encode(event.data).decode()
    return (event.id, event.time, event.type, event.subject, event.tenant_id, data)


async def insert(conn: Conn, events: Sequence[OutboxEvent]) -> None:
    """Write stamped ``events`` on ``conn`` (inside the caller's transaction), in one statement
    (rows are numbered in the order of its VALUES list)."""
    if not events:
        return
    args: list[Any] = []
    for event in events:
        args.extend(_row(event))
    await conn.execute(_insert_sql(len(events)), *args)


@lru_cache(maxsize=16)
def _insert_sql(count: int) -> str:
    rows = ", ".join(
        "(" + ", ".join(f"${6 * r + c}" for c in range(1, 7)) + ")" for r in range(count)
    )
    return _INSERT.split(" VALUES ")[0] + " VALUES " + rows


def unnest_sql(first: int) -> str:
    """A PostgreSQL ``FROM`` item of events given as the six arrays of :func:`event_arrays`,
    parameters from ``$first``: rows ``x(id, time, type, subject, tenant_id, data, n)``, ``n``
    their order."""
    n = [f"${i}" for i in range(first, first + 6)]
    return (
        f"unnest({n[0]}::text[], {n[1]}::timestamptz[], {n[2]}::text[], {n[3]}::text[], "
        f"{n[4]}::text[], {n[5]}::jsonb[]) WITH ORDINALITY "
        "AS x(id, time, type, subject, tenant_id, data, n)"
    )


def event_arrays(events: Sequence[OutboxEvent]) -> list[list[Any]]:
    """Stamped ``events`` as the six arrays :func:`unnest_sql` reads, in order."""
    arrays: list[list[Any]] = [[] for _ in range(6)]
    for event in events:
        for array, value in zip(arrays, _row(event), strict=True):
            array.append(value)
    return arrays


def batch_sql(update_sql: str, first: int) -> str:
    """``update_sql`` (a PostgreSQL ``UPDATE ... RETURNING``) that also writes the events of the
    rows it updated, in the same statement. Parameters from ``$first``: arrays of the row id
    each event belongs to, then the events' ids, times, types, subjects, tenants and data."""
    n = [f"${i}" for i in range(first, first + 7)]
    return (
        f"WITH u AS ({update_sql}), "
        "e AS (INSERT INTO outbox (id, time, type, subject, tenant_id, data) "
        "SELECT x.id, x.time, x.type, x.subject, x.tenant_id, x.data "
        f"FROM unnest({n[0]}::text[], {n[1]}::text[], {n[2]}::timestamptz[], {n[3]}::text[], "
        f"{n[4]}::text[], {n[5]}::text[], {n[6]}::jsonb[]) WITH ORDINALITY "
        "AS x(row_id, id, time, type, subject, tenant_id, data, n) "
        "WHERE x.row_id IN (SELECT id FROM u) ORDER BY x.n) "
        "SELECT * FROM u"
    )


def batch_args(rows: Sequence[tuple[str, Sequence[OutboxEvent]]]) -> list[list[Any]]:
    """The seven arrays of :func:`batch_sql` for (row id, its events) pairs, in order."""
    arrays: list[list[Any]] = [[] for _ in range(7)]
    for row_id, events in rows:
        for event in events:
            for array, value in zip(arrays, (row_id, *_row(event)), strict=True):
                array.append(value)
    return arrays


class OutboxOps(SqlBase):
    """Writing events on their own, reading and trimming the outbox, waking its relay."""

    def watch_outbox(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._outbox_listeners.append(callback)
        return lambda: self._outbox_listeners.remove(callback)

    async def write_events(self, events: Sequence[OutboxEvent]) -> list[OutboxEvent]:
        stamped = stamp(events)
        if not stamped:
            return []
        async with self._transaction() as conn:
            await insert(conn, stamped)
        self._outbox_written()
        return stamped

    async def read_outbox(self, limit: int = 500) -> list[OutboxEvent]:
        check_limit(limit)
        async with self._reader() as conn:
            rows = await conn.fetch(f"SELECT {_COLS} FROM outbox ORDER BY seq LIMIT $1", limit)
        events = []
        for row in rows:
            raw = dict(row)
            raw["data"] = msgspec.json.decode(raw["data"])
            events.append(msgspec.convert(raw, OutboxEvent))
        return events

    async def remove_from_outbox(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        # Exactly these rows: a row with a seq in between may have committed since it was read.
        marks = ", ".join(f"${i}" for i in range(1, len(seqs) + 1))
        async with self._writer() as conn:
            await conn.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", *seqs)
