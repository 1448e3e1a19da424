"""Targeted store operations: quotas, the task journal, the audit trail (host claims and
placement are in :mod:`cloudcore.store._claims`, addresses in :mod:`cloudcore.store._ipam`).
Each is one conditional statement or one transaction, so concurrent callers cannot overspend or
half-apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from cloudcore.errors import InvalidRecord, NotFound, QuotaExceeded
from cloudcore.store import _outbox
from cloudcore.store._conn import Conn, SqlBase, check_amounts, check_limit, now
from cloudcore.store._table import decode_cursor, encode_cursor
from cloudcore.store.records import (
    AuditEvent,
    OutboxEvent,
    Page,
    Quota,
    StepState,
    TaskStep,
)

__all__ = ["DomainOps"]

_QUOTA_COLS = "tenant_id, resource, maximum, used, version"
_STEP_COLS = "task_id, seq, name, state, deadline, error, data, created_at, updated_at"
_EVENT_COLS = "id, time, type, subject, tenant_id, actor, data"

_CONSUME = f"""UPDATE quotas SET used = used + $3, version = version + 1
WHERE tenant_id = $1 AND resource = $2 AND used + $3 <= maximum RETURNING {_QUOTA_COLS}"""
_GIVE_BACK = f"""UPDATE quotas SET used = CASE WHEN used > $3 THEN used - $3 ELSE 0 END,
version = version + 1 WHERE tenant_id = $1 AND resource = $2 RETURNING {_QUOTA_COLS}"""
_UPDATE_STEP = f"""UPDATE task_steps SET state = $3, error = $4, data = COALESCE($5, data),
updated_at = $6 WHERE task_id = $1 AND seq = $2 RETURNING {_STEP_COLS}"""


def _json(value: Mapping[str, Any] | None) -> str:
    return msgspec.json.encode(dict(value or {})).decode()


def _struct(row: Any, kind: type[Any], json: tuple[str, ...] = ()) -> Any:
    raw = dict(row)
    for column in json:
        raw[column] = msgspec.json.decode(raw[column])
    return msgspec.convert(raw, kind)


class DomainOps(SqlBase):
    """The store's targeted operations, in portable SQL."""

    async def _must(self, conn: Conn, sql: str, label: str, *key: Any) -> Any:
        row = await conn.fetchrow(sql, *key)
        if row is None:
            raise NotFound(f"{label} {' '.join(map(repr, key))} not found")
        return row

    # -- quotas -----------------------------------------------------------------------------

    async def set_quota(self, tenant_id: str, resource: str, maximum: int) -> Quota:
        check_amounts(maximum=maximum)
        async with self._writer() as conn:
            row = await conn.fetchrow(
                "INSERT INTO quotas (tenant_id, resource, maximum, used, version) "
                "VALUES ($1, $2, $3, 0, 1) ON CONFLICT (tenant_id, resource) DO UPDATE "
                "SET maximum = excluded.maximum, version = quotas.version + 1 "
                f"RETURNING {_QUOTA_COLS}",
                tenant_id,
                resource,
                maximum,
            )
        return _struct(row, Quota)  # type: ignore[no-any-return]

    async def get_quotas(self, tenant_id: str) -> list[Quota]:
        async with self._reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_QUOTA_COLS} FROM quotas WHERE tenant_id = $1 ORDER BY resource",
                tenant_id,
            )
        return [_struct(r, Quota) for r in rows]

    async def consume_quota(self, tenant_id: str, amounts: Mapping[str, int]) -> list[Quota]:
        check_amounts(**amounts)
        async with self._transaction() as conn:
            return await self._consume(conn, tenant_id, amounts)

    async def _consume(self, conn: Conn, tenant_id: str, amounts: Mapping[str, int]) -> list[Quota]:
        """Consume inside the caller's transaction; QuotaExceeded if one resource does not fit
        (the caller's transaction then rolls back)."""
        changed: list[Quota] = []
        for resource in sorted(amounts):  # one order everywhere: no deadlock
            amount = amounts[resource]
            row = await conn.fetchrow(_CONSUME, tenant_id, resource, amount)
            if row is not None:
                changed.append(_struct(row, Quota))
                continue
            have = await conn.fetchrow(
                f"SELECT {_QUOTA_COLS} FROM quotas WHERE tenant_id = $1 AND resource = $2",
                tenant_id,
                resource,
            )
            if have is not None:
                quota: Quota = _struct(have, Quota)
                raise QuotaExceeded(
                    f"tenant {tenant_id!r} may use {quota.maximum} {resource}, uses "
                    f"{quota.used}, asked {amount} more"
                )
        return changed

    async def release_quota(self, tenant_id: str, amounts: Mapping[str, int]) -> list[Quota]:
        check_amounts(**amounts)
        async with self._transaction() as conn:
            return await self._give_back(conn, tenant_id, amounts)

    async def _give_back(
        self, conn: Conn, tenant_id: str, amounts: Mapping[str, int]
    ) -> list[Quota]:
        """Give back inside the caller's transaction (usage never below zero)."""
        changed: list[Quota] = []
        for resource in sorted(amounts):
            row = await conn.fetchrow(_GIVE_BACK, tenant_id, resource, amounts[resource])
            if row is not None:
                changed.append(_struct(row, Quota))
        return changed

    # -- task journal -----------------------------------------------------------------------

    async def append_step(
        self,
        task_id: str,
        name: str,
        *,
        deadline: datetime | None = None,
        data: Mapping[str, Any] | None = None,
        state: StepState = StepState.PENDING,
        events: Sequence[OutboxEvent] = (),
    ) -> TaskStep:
        if not name:
            raise InvalidRecord("a step needs a name")
        state = StepState(state)
        stamped = _outbox.stamp(events)
        row = await self._insert_step(
            task_id, name, state.value, deadline, _json(data), now(), stamped
        )
        if row is None:
            raise NotFound(f"Task {task_id!r} not found")
        if stamped:
            self._outbox_written()
        return _struct(row, TaskStep, ("data",))  # type: ignore[no-any-return]

    async def _insert_step(
        self,
        task_id: str,
        name: str,
        state: str,
        deadline: datetime | None,
        data: str,
        stamp: datetime,
        events: Sequence[OutboxEvent],
    ) -> Any:
        """Number a step by its task's counter and insert it with ``events`` (each given the
        step's ``seq``), atomically; None if no such task. A transaction here; PostgreSQL does
        it in one statement."""
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE tasks SET step_count = step_count + 1 WHERE id = $1 RETURNING step_count",
                task_id,
            )
            if row is None:
                return None
            seq = row["step_count"]
            step = await conn.fetchrow(
                f"INSERT INTO task_steps ({_STEP_COLS}) VALUES ($1, $2, $3, $4, $5, NULL, $6, "
                f"$7, $7) RETURNING {_STEP_COLS}",
                task_id,
                seq,
                name,
                state,
                deadline,
                data,
                stamp,
            )
            numbered = [msgspec.structs.replace(e, data={**e.data, "seq": seq}) for e in events]
            await _outbox.insert(conn, numbered)
            return step

    async def update_step(
        self,
        task_id: str,
        seq: int,
        *,
        state: StepState,
        error: str | None = None,
        data: Mapping[str, Any] | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> TaskStep:
        state = StepState(state)
        stamped = _outbox.stamp(events)
        args = (task_id, seq, state.value, error, None if data is None else _json(data), now())
        row = await self._write_step(args, stamped)
        if row is None:
            raise NotFound(f"step {seq} of task {task_id!r} not found")
        if stamped:
            self._outbox_written()
        return _struct(row, TaskStep, ("data",))  # type: ignore[no-any-return]

    async def _write_step(self, args: tuple[Any, ...], events: Sequence[OutboxEvent]) -> Any:
        """Update a step (``args`` of ``_UPDATE_STEP``) with its stamped ``events``, atomically;
        the row, or None (nothing written). PostgreSQL does it in one statement."""
        if not events:
            async with self._writer() as conn:
                return await conn.fetchrow(_UPDATE_STEP, *args)
        async with self._transaction() as conn:
            row = await conn.fetchrow(_UPDATE_STEP, *args)
            if row is not None:
                await _outbox.insert(conn, events)
            return row

    async def list_steps(self, task_id: str) -> list[TaskStep]:
        async with self._reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_STEP_COLS} FROM task_steps WHERE task_id = $1 ORDER BY seq", task_id
            )
        return [_struct(r, TaskStep, ("data",)) for r in rows]

    # -- audit trail ------------------------------------------------------------------------

    async def record_event(
        self,
        type: str,
        subject: str,
        *,
        tenant_id: str | None = None,
        actor: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        if not type or not subject:
            raise InvalidRecord("an audit event needs a type and a subject")
        async with self._writer() as conn:
            row = await conn.fetchrow(
                "INSERT INTO events (time, type, subject, tenant_id, actor, data) "
                f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_EVENT_COLS}",
                now(),
                type,
                subject,
                tenant_id,
                actor,
                _json(data),
            )
        return _struct(row, AuditEvent, ("data",))  # type: ignore[no-any-return]

    async def list_events(
        self,
        *,
        subject: str | None = None,
        tenant_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page[AuditEvent]:
        check_limit(limit)
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("subject", subject), ("tenant_id", tenant_id)):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if after is not None:
            try:
                args.append(int(decode_cursor(after)))
            except ValueError:
                raise InvalidRecord(f"cursor {after!r} is malformed") from None
            clauses.append(f"id > ${len(args)}")
        args.append(limit + 1)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        sql = f"SELECT {_EVENT_COLS} FROM events {where}ORDER BY id LIMIT ${len(args)}"
        async with self._reader() as conn:
            rows = await conn.fetch(sql, *args)
        items = [_struct(r, AuditEvent, ("data",)) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items=items, next_cursor=encode_cursor(str(items[-1].id)) if more else None)
