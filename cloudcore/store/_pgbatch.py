"""Group commit for compare-and-set updates on PostgreSQL.

Each update is a commit, and on a busy node most of its cost is the round trip and the WAL flush,
not the row. So updates of the same table and fields that arrive while an earlier batch is in
flight travel together as ONE ``UPDATE ... FROM unnest(...)`` statement: one round trip, one
commit, and still a compare-and-set per row (a row whose version moved on is simply not
returned, and its caller gets ``VersionConflict``). Two updates of the same row never share a
statement (the second waits for the next batch), so each keeps its own outcome. If a statement
fails for one bad row (a constraint), its updates are retried one by one so only that one fails.
Updates that carry outbox events write them in the same statement, for the rows that matched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cloudcore.errors import BackendUnavailable, CloudcoreError
from cloudcore.store import _outbox
from cloudcore.store._conn import Conn, now
from cloudcore.store._table import Table
from cloudcore.store.records import OutboxEvent

__all__ = ["CasBatcher"]

_MAX_BATCH = 500

Writer = Callable[[], Any]  # an async context manager yielding a Conn
Single = Callable[
    [Table[Any], tuple[str, ...], str, int, list[Any], Sequence[OutboxEvent]], Awaitable[Any]
]


class _Pending:
    __slots__ = ("done", "events", "expected", "id", "values")

    def __init__(
        self,
        id: str,
        expected: int,
        values: list[Any],
        events: Sequence[OutboxEvent],
        done: asyncio.Future[Any],
    ):
        self.id = id
        self.expected = expected
        self.values = values
        self.events = events
        self.done = done


class CasBatcher:
    """Coalesces concurrent compare-and-set updates per (table, fields)."""

    def __init__(self, writer: Writer, single: Single) -> None:
        self._writer = writer
        self._single = single
        self._queues: dict[tuple[str, tuple[str, ...]], list[_Pending]] = {}
        self._draining: dict[tuple[str, tuple[str, ...]], asyncio.Task[None]] = {}

    async def update(
        self,
        table: Table[Any],
        columns: tuple[str, ...],
        id: str,
        expected_version: int,
        values: list[Any],
        events: Sequence[OutboxEvent] = (),
    ) -> Any:
        """The updated row, or None if no row had ``id`` at ``expected_version``; ``events``
        are written with the row, or not at all."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        key = (table.name, columns)
        pending = _Pending(id, expected_version, values, events, done)
        self._queues.setdefault(key, []).append(pending)
        if key not in self._draining:
            self._draining[key] = asyncio.create_task(self._drain(table, columns))
        return await done

    async def _drain(self, table: Table[Any], columns: tuple[str, ...]) -> None:
        key = (table.name, columns)
        try:
            while queue := self._queues.get(key):
                batch: list[_Pending] = []
                later: list[_Pending] = []
                ids: set[str] = set()
                for pending in queue:
                    if pending.id in ids or len(batch) == _MAX_BATCH:
                        later.append(pending)
                    else:
                        ids.add(pending.id)
                        batch.append(pending)
                self._queues[key] = later
                await self._run(table, columns, batch)
        finally:
            del self._draining[key]
            if self._queues.get(key):  # left by a batch that raised: they are not forgotten
                self._draining[key] = asyncio.create_task(self._drain(table, columns))
            else:
                self._queues.pop(key, None)

    async def _run(
        self, table: Table[Any], columns: tuple[str, ...], batch: list[_Pending]
    ) -> None:
        try:
            async with self._writer() as conn:
                rows = await self._execute(conn, table, columns, batch)
        except BackendUnavailable as exc:
            _fail(batch, exc)
            return
        except CloudcoreError as exc:
            if len(batch) == 1:
                _fail(batch, exc)
            else:
                await self._one_by_one(table, columns, batch)
            return
        except BaseException as exc:
            _fail(batch, BackendUnavailable(f"the update was interrupted: {exc!r}"))
            raise
        by_id = {row["id"]: row for row in rows}
        for pending in batch:
            if not pending.done.done():
                pending.done.set_result(by_id.get(pending.id))

    async def _execute(
        self, conn: Conn, table: Table[Any], columns: tuple[str, ...], batch: list[_Pending]
    ) -> list[Any]:
        arrays = [[p.values[i] for p in batch] for i in range(len(columns))]
        sql = table.batch_update_sql(columns)
        with_events = [(p.id, p.events) for p in batch if p.events]
        if with_events:
            sql = _outbox.batch_sql(sql, 4 + len(columns))
            arrays.extend(_outbox.batch_args(with_events))
        return await conn.fetch(
            sql, now(), [p.id for p in batch], [p.expected for p in batch], *arrays
        )

    async def _one_by_one(
        self, table: Table[Any], columns: tuple[str, ...], batch: list[_Pending]
    ) -> None:
        for pending in batch:
            try:
                row = await self._single(
                    table, columns, pending.id, pending.expected, pending.values, pending.events
                )
            except CloudcoreError as exc:
                _fail([pending], exc)
            else:
                if not pending.done.done():
                    pending.done.set_result(row)


def _fail(batch: list[_Pending], exc: CloudcoreError) -> None:
    for pending in batch:
        if not pending.done.done():
            pending.done.set_exception(type(exc)(*exc.args))
