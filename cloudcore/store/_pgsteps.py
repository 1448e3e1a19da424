"""Group commit for the task journal's writes on PostgreSQL.

Every step of every task is written twice (begun, then its outcome), each with its ``task.step``
event, so under a burst of deploys these are most of the node's writes. Like compare-and-set
updates (:mod:`cloudcore.store._pgbatch`), the journal writes that arrive while an earlier batch
is in flight travel together as ONE statement: one round trip and one commit for all, each write
still atomic with its events (an event is written only with its step's row). Two writes of the
same task (a new step) or the same step (an outcome) never share a statement. If a statement
fails, its writes are retried one by one so only the bad one fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from datetime import datetime
from typing import Any

from cloudcore.errors import BackendUnavailable, CloudcoreError
from cloudcore.store import _outbox
from cloudcore.store._conn import Conn
from cloudcore.store._domain import _STEP_COLS
from cloudcore.store.records import OutboxEvent

__all__ = ["StepBatcher"]

_MAX_BATCH = 500
_S_COLS = ", ".join(f"s.{c}" for c in _STEP_COLS.split(", "))
_T_COLS = ", ".join(f"t.{c}" for c in _STEP_COLS.split(", "))
_EVENTS = (  # each event with the key of the row it belongs to: ($7 task ids, $8 seqs) first
    "unnest($7::text[], $8::bigint[], $9::text[], $10::timestamptz[], $11::text[], "
    "$12::text[], $13::text[], $14::jsonb[]) WITH ORDINALITY "
    "AS x(task_id, seq, id, time, type, subject, tenant_id, data, n)"
)

# New steps of several tasks, numbered by each task's counter; each event gets its step's seq
# (the events' seq array is unused here: zeros).
_APPEND = f"""WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[],
    $6::timestamptz[]) AS v(task_id, name, state, deadline, data, at)
), task AS (
    UPDATE tasks SET step_count = tasks.step_count + 1 FROM v WHERE tasks.id = v.task_id
    RETURNING tasks.id, tasks.step_count
), s AS (
    INSERT INTO task_steps ({_STEP_COLS})
    SELECT v.task_id, task.step_count, v.name, v.state, v.deadline, NULL, v.data, v.at, v.at
    FROM v JOIN task ON task.id = v.task_id
    RETURNING {_STEP_COLS}
), e AS (
    INSERT INTO outbox (id, time, type, subject, tenant_id, data)
    SELECT x.id, x.time, x.type, x.subject, x.tenant_id, x.data || jsonb_build_object('seq', s.seq)
    FROM {_EVENTS} JOIN s ON s.task_id = x.task_id ORDER BY x.n
)
SELECT {_S_COLS} FROM s"""

# Outcomes of several steps, each with its events.
_UPDATE = f"""WITH v AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[],
    $6::timestamptz[]) AS v(task_id, seq, state, error, data, at)
), u AS (
    UPDATE task_steps t SET state = v.state, error = v.error, data = COALESCE(v.data, t.data),
    updated_at = v.at FROM v WHERE t.task_id = v.task_id AND t.seq = v.seq
    RETURNING {_T_COLS}
), e AS (
    INSERT INTO outbox (id, time, type, subject, tenant_id, data)
    SELECT x.id, x.time, x.type, x.subject, x.tenant_id, x.data
    FROM {_EVENTS} JOIN u ON u.task_id = x.task_id AND u.seq = x.seq ORDER BY x.n
)
SELECT * FROM u"""

Writer = Callable[[], Any]  # an async context manager yielding a Conn
Single = Callable[[tuple[Any, ...], Sequence[OutboxEvent]], Awaitable[Any]]


class _Job:
    __slots__ = ("args", "done", "events", "key")

    def __init__(self, key: Hashable, args: tuple[Any, ...], events: Sequence[OutboxEvent]):
        self.key = key
        self.args = args
        self.events = events
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class _Group:
    """Jobs of one statement: queued while a batch runs, then sent together."""

    def __init__(self, writer: Writer, sql: str, single: Single, key: Callable[[Any], Hashable]):
        self._writer = writer
        self._sql = sql
        self._single = single
        self._key = key  # of a returned row, as the jobs' keys
        self._queue: list[_Job] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, job: _Job) -> Any:
        self._queue.append(job)
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await job.done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[_Job] = []
                later: list[_Job] = []
                keys: set[Hashable] = set()
                for job in self._queue:
                    if job.key in keys or len(batch) == _MAX_BATCH:
                        later.append(job)
                    else:
                        keys.add(job.key)
                        batch.append(job)
                self._queue = later
                await self._run(batch)
        finally:
            self._draining = None
            if self._queue:  # left by a batch that raised: they are not forgotten
                self._draining = asyncio.create_task(self._drain())

    async def _run(self, batch: list[_Job]) -> None:
        if len(batch) == 1:
            await self._one(batch[0])
            return
        try:
            async with self._writer() as conn:
                rows = await self._execute(conn, batch)
        except BackendUnavailable as exc:
            _fail(batch, exc)
            return
        except CloudcoreError:
            for job in batch:
                await self._one(job)
            return
        except BaseException as exc:
            _fail(batch, BackendUnavailable(f"the write was interrupted: {exc!r}"))
            raise
        by_key = {self._key(row): row for row in rows}
        for job in batch:
            if not job.done.done():
                job.done.set_result(by_key.get(job.key))

    async def _execute(self, conn: Conn, batch: list[_Job]) -> list[Any]:
        arrays: list[list[Any]] = [[job.args[i] for job in batch] for i in range(6)]
        events: list[list[Any]] = [[], []]
        for job in batch:
            task_id, seq = job.key if isinstance(job.key, tuple) else (job.key, 0)
            events[0].extend(task_id for _ in job.events)
            events[1].extend(seq for _ in job.events)
        events.extend(_outbox.event_arrays([e for job in batch for e in job.events]))
        return await conn.fetch(self._sql, *arrays, *events)

    async def _one(self, job: _Job) -> None:
        try:
            row = await self._single(job.args, job.events)
        except CloudcoreError as exc:
            _fail([job], exc)
        except BaseException as exc:
            _fail([job], BackendUnavailable(f"the write was interrupted: {exc!r}"))
            raise
        else:
            if not job.done.done():
                job.done.set_result(row)


class StepBatcher:
    """Coalesces concurrent journal writes: new steps, and step outcomes."""

    def __init__(self, writer: Writer, append_one: Single, update_one: Single) -> None:
        self._append = _Group(writer, _APPEND, append_one, lambda row: row["task_id"])
        self._update = _Group(writer, _UPDATE, update_one, lambda row: (row["task_id"], row["seq"]))

    async def append(
        self,
        task_id: str,
        name: str,
        state: str,
        deadline: datetime | None,
        data: str,
        stamp: datetime,
        events: Sequence[OutboxEvent],
    ) -> Any:
        """The new step's row, or None if there is no such task."""
        args = (task_id, name, state, deadline, data, stamp)
        return await self._append.submit(_Job(task_id, args, events))

    async def update(self, args: tuple[Any, ...], events: Sequence[OutboxEvent]) -> Any:
        """The step's row (``args`` as ``_UPDATE_STEP`` takes them), or None if no such step."""
        return await self._update.submit(_Job((args[0], args[1]), args, events))


def _fail(batch: list[_Job], exc: CloudcoreError) -> None:
    for job in batch:
        if not job.done.done():
            job.done.set_exception(type(exc)(*exc.args))
