"""PostgreSQL's own statements for the writes of every deploy: one round trip where the portable
code takes a transaction of several.

Each is one statement, so atomic by itself, and keeps the portable code's locking order (the VM
row, then hosts, then quotas by resource). When a statement changes nothing (a condition did not
hold), the portable code runs instead to find out which one and raise its error, so refusals
read the same on both stores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cloudcore.errors import QuotaExceeded
from cloudcore.store import _outbox
from cloudcore.store._conn import Conn, now
from cloudcore.store._domain import _QUOTA_COLS, _STEP_COLS, _UPDATE_STEP, _struct
from cloudcore.store._pgsteps import StepBatcher
from cloudcore.store._sql import SqlStore
from cloudcore.store._table import table_of
from cloudcore.store.records import (
    VM,
    Host,
    IdempotencyKey,
    IpAllocation,
    OutboxEvent,
    Quota,
    Task,
    VMState,
)

__all__ = ["PgOps"]

_HOSTS = table_of(Host)
_VMS = table_of(VM)

# A step numbered by its task's counter, with its events (each given the step's seq).
_APPEND_STEP = f"""WITH task AS (
    UPDATE tasks SET step_count = step_count + 1 WHERE id = $1 RETURNING step_count
), s AS (
    INSERT INTO task_steps ({_STEP_COLS})
    SELECT $1, task.step_count, $2, $3, $4, NULL, $5, $6, $6 FROM task
    RETURNING {_STEP_COLS}
), e AS (
    INSERT INTO outbox (id, time, type, subject, tenant_id, data)
    SELECT x.id, x.time, x.type, x.subject, x.tenant_id, x.data || jsonb_build_object('seq', s.seq)
    FROM {_outbox.unnest_sql(7)} CROSS JOIN s ORDER BY x.n
)
SELECT * FROM s"""

# A step's outcome with its events.
_UPDATE_STEP_EVENTS = f"""WITH u AS ({_UPDATE_STEP}), e AS (
    INSERT INTO outbox (id, time, type, subject, tenant_id, data)
    SELECT x.id, x.time, x.type, x.subject, x.tenant_id, x.data
    FROM {_outbox.unnest_sql(7)} WHERE EXISTS (SELECT 1 FROM u) ORDER BY x.n
)
SELECT * FROM u"""

# Placement: the VM row locked first (at the version expected, on no host), then the host's
# claim if it fits, then the VM; nothing if any condition fails.
_PLACE = f"""WITH lv AS MATERIALIZED (
    SELECT id, (spec->>'cpus')::bigint AS cpus, (spec->>'memory_mib')::bigint AS memory_mib
    FROM vms WHERE id = $1 AND version = $2 AND host_id IS NULL FOR UPDATE
), h AS (
    UPDATE hosts SET cpus_used = hosts.cpus_used + lv.cpus,
    memory_mib_used = hosts.memory_mib_used + lv.memory_mib
    FROM lv WHERE hosts.id = $3 AND hosts.admin_state = 'ENABLED' AND hosts.health = 'HEALTHY'
    AND hosts.cpus_used + lv.cpus <= hosts.cpus
    AND hosts.memory_mib_used + lv.memory_mib <= hosts.memory_mib
    RETURNING {", ".join(f"hosts.{c} AS h_{c}" for c in _HOSTS.columns)}
), v AS (
    UPDATE vms SET host_id = $3, state = $4, version = version + 1, updated_at = $5
    FROM h WHERE vms.id = $1 RETURNING {", ".join(f"vms.{c} AS v_{c}" for c in _VMS.columns)}
)
SELECT * FROM v CROSS JOIN h"""

# Quota for several resources at once: the tenant's rows locked in resource order, then each
# consumed if it fits. Returns every row asked for, ``fits`` false for one that did not.
_CONSUME = f"""WITH lk AS MATERIALIZED (
    SELECT resource FROM quotas WHERE tenant_id = $1 AND resource = ANY($2::text[])
    ORDER BY resource FOR UPDATE
), w AS (
    SELECT * FROM unnest($2::text[], $3::bigint[]) AS w(resource, amount)
), u AS (
    UPDATE quotas q SET used = q.used + w.amount, version = q.version + 1
    FROM w, lk WHERE q.tenant_id = $1 AND q.resource = w.resource AND lk.resource = w.resource
    AND q.used + w.amount <= q.maximum
    RETURNING {", ".join(f"q.{c}" for c in _QUOTA_COLS.split(", "))}
)
SELECT *, true AS fits FROM u
UNION ALL
SELECT {_QUOTA_COLS}, false FROM quotas
WHERE tenant_id = $1 AND resource IN (SELECT resource FROM lk)
AND resource NOT IN (SELECT resource FROM u)"""


_TASKS = table_of(Task)


def _marks(first: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(first, first + count))


_NV, _NT = len(_VMS.columns), len(_TASKS.columns)
_C = _NV + _NT + 1  # the first parameter after the VM's and the task's columns
# A create: the tenant's quota rows locked in resource order, then, if every resource fits and
# the Idempotency-Key (if any: $C+3 not NULL) is still held by this request, the quota taken,
# the key pointed at the task, the VM and the task inserted; else nothing. Answers whether.
_CREATE = f"""WITH lk AS MATERIALIZED (
    SELECT resource, used, maximum FROM quotas
    WHERE tenant_id = ${_C} AND resource = ANY(${_C + 1}::text[]) ORDER BY resource FOR UPDATE
), w AS (
    SELECT * FROM unnest(${_C + 1}::text[], ${_C + 2}::bigint[]) AS w(resource, amount)
), fits AS (
    SELECT NOT EXISTS (
        SELECT 1 FROM lk JOIN w ON w.resource = lk.resource WHERE lk.used + w.amount > lk.maximum
    ) AS yes
), hold AS (
    UPDATE idempotency_keys SET task_id = ${_NV + 1}
    WHERE principal = ${_C + 3} AND key = ${_C + 4} AND owner = ${_C + 5} AND task_id IS NULL
    AND (SELECT yes FROM fits) RETURNING key
), go AS (
    SELECT (SELECT yes FROM fits) AND (${_C + 3}::text IS NULL OR EXISTS (SELECT 1 FROM hold))
    AS yes
), u AS (
    UPDATE quotas q SET used = q.used + w.amount, version = q.version + 1
    FROM w, lk WHERE q.tenant_id = ${_C} AND q.resource = w.resource
    AND lk.resource = w.resource AND (SELECT yes FROM go)
), v AS (
    INSERT INTO vms ({", ".join(_VMS.columns)})
    SELECT {_marks(1, _NV)} WHERE (SELECT yes FROM go)
), t AS (
    INSERT INTO tasks ({", ".join(_TASKS.columns)})
    SELECT {_marks(_NV + 1, _NT)} WHERE (SELECT yes FROM go)
)
SELECT yes FROM go"""


class PgOps(SqlStore):
    """The portable operations, some in one PostgreSQL statement."""

    #: Group commit of journal writes (see _pgsteps); None: each write on its own.
    _steps: StepBatcher | None = None

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
        if self._steps is not None:
            return await self._steps.append(task_id, name, state, deadline, data, stamp, events)
        return await self._append_one((task_id, name, state, deadline, data, stamp), events)

    async def _append_one(self, args: tuple[Any, ...], events: Sequence[OutboxEvent]) -> Any:
        async with self._writer() as conn:
            return await conn.fetchrow(_APPEND_STEP, *args, *_outbox.event_arrays(events))

    async def _write_step(self, args: tuple[Any, ...], events: Sequence[OutboxEvent]) -> Any:
        if self._steps is not None:
            return await self._steps.update(args, events)
        return await self._update_one(args, events)

    async def _update_one(self, args: tuple[Any, ...], events: Sequence[OutboxEvent]) -> Any:
        async with self._writer() as conn:
            if not events:
                return await conn.fetchrow(_UPDATE_STEP, *args)
            return await conn.fetchrow(_UPDATE_STEP_EVENTS, *args, *_outbox.event_arrays(events))

    async def _write_created(
        self,
        vm: VM,
        task: Task,
        usage: Mapping[str, int],
        claim: IdempotencyKey | None,
        mac_prefix: str,
    ) -> list[IpAllocation]:
        if vm.spec.nics:  # addresses to hold: the portable transaction
            return await super()._write_created(vm, task, usage, claim, mac_prefix)
        resources = sorted(usage)
        held = (claim.principal, claim.key, claim.owner) if claim is not None else (None,) * 3
        async with self._writer() as conn:
            row = await conn.fetchrow(
                _CREATE,
                *_VMS.encode(vm),
                *_TASKS.encode(task),
                vm.tenant_id,
                resources,
                [usage[r] for r in resources],
                *held,
            )
        if not row["yes"]:  # a quota or the key refused: nothing written; the portable code says
            return await super()._write_created(vm, task, usage, claim, mac_prefix)
        return []

    async def place_vm(
        self,
        vm_id: str,
        host_id: str,
        *,
        expected_version: int,
        state: VMState = VMState.PLACED,
    ) -> tuple[VM, Host]:
        state = VMState(state)
        async with self._writer() as conn:
            row = await conn.fetchrow(_PLACE, vm_id, expected_version, host_id, state.value, now())
        if row is None:  # which condition failed, and its error, from the portable code
            return await super().place_vm(
                vm_id, host_id, expected_version=expected_version, state=state
            )
        vm = _VMS.decode({c: row[f"v_{c}"] for c in _VMS.columns})
        return vm, _HOSTS.decode({c: row[f"h_{c}"] for c in _HOSTS.columns})

    async def _consume(self, conn: Conn, tenant_id: str, amounts: Mapping[str, int]) -> list[Quota]:
        resources = sorted(amounts)
        rows = await conn.fetch(_CONSUME, tenant_id, resources, [amounts[r] for r in resources])
        over = sorted(row["resource"] for row in rows if not row["fits"])
        if not over:
            return [_struct({c: row[c] for c in _QUOTA_COLS.split(", ")}, Quota) for row in rows]
        # The caller's transaction rolls back. The row is locked: read as it is now, to say.
        quota: Quota = _struct(
            await conn.fetchrow(
                f"SELECT {_QUOTA_COLS} FROM quotas WHERE tenant_id = $1 AND resource = $2",
                tenant_id,
                over[0],
            ),
            Quota,
        )
        raise QuotaExceeded(
            f"tenant {tenant_id!r} may use {quota.maximum} {over[0]}, uses {quota.used}, "
            f"asked {amounts[over[0]]} more"
        )
