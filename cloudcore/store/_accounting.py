"""Creating a VM (quota, VM, deploy task, its NICs' addresses and MACs) or a volume (quota,
volume, create task) in one transaction with the Idempotency-Key it was asked under, changing a
record with its quota and the task the change begins or ends, and recomputing quota usage from
what exists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import msgspec

from cloudcore.errors import Conflict, InvalidRecord, NotFound, VersionConflict
from cloudcore.logging import get_logger
from cloudcore.store import _outbox
from cloudcore.store._conn import Conn, check_amounts, now
from cloudcore.store._domain import _QUOTA_COLS, _struct
from cloudcore.store._ipam import DEFAULT_MAC_PREFIX, IpamOps
from cloudcore.store._table import Table, table_of, validate
from cloudcore.store.records import (
    VM,
    IdempotencyKey,
    IpAllocation,
    OutboxEvent,
    Quota,
    QuotaDrift,
    Record,
    Task,
    VMSpec,
    VMState,
    Volume,
)
from cloudcore.store.usage import (
    QUOTA_RESOURCES,
    RESIZING_KIND,
    template_usage,
    vm_usage,
    vm_usage_resizing,
)

__all__ = ["AccountingOps"]

_log = get_logger("cloudcore.store")
R = TypeVar("R", bound=Record)


class _Missed(Exception):
    """No row had the id at the expected version: the transaction rolls back, then the store
    says why (NotFound or VersionConflict)."""


_VMS = table_of(VM)
_VOLUMES = table_of(Volume)
_TASKS = table_of(Task)
_HOLD_TASK = """UPDATE idempotency_keys SET task_id = $4
WHERE principal = $1 AND key = $2 AND owner = $3 AND task_id IS NULL RETURNING key"""
_SET_USED = """UPDATE quotas SET used = $3, version = version + 1
WHERE tenant_id = $1 AND resource = $2"""


class AccountingOps(IpamOps):
    """Changes that span records, each one transaction."""

    #: Appended to a SELECT that must lock its rows to the end of the transaction
    #: (PostgreSQL; SQLite's transactions already hold the one write lock).
    _row_lock = ""

    async def _name_missing_reference(self, table: Table[Any], record: Any) -> None:
        """Raise InvalidRecord naming the field if ``record`` refers to a missing record."""
        async with self._reader() as conn:
            missing = await table.missing_reference(conn, record)
        if missing is not None:
            raise missing from None

    async def create_vm(
        self,
        vm: VM,
        task: Task,
        usage: Mapping[str, int],
        *,
        claim: IdempotencyKey | None = None,
        mac_prefix: str | None = None,
    ) -> tuple[VM, Task]:
        check_amounts(**usage)
        stamp = now()
        vm = msgspec.structs.replace(validate(vm), version=1, created_at=stamp, updated_at=stamp)
        task = msgspec.structs.replace(
            validate(task), version=1, created_at=stamp, updated_at=stamp
        )
        try:
            nics = await self._write_created(
                vm, task, usage, claim, mac_prefix or DEFAULT_MAC_PREFIX
            )
        except InvalidRecord:
            await self._name_missing_reference(_VMS, vm)
            raise
        if nics:
            self._outbox_written()
        return vm, task

    async def _write_created(
        self,
        vm: VM,
        task: Task,
        usage: Mapping[str, int],
        claim: IdempotencyKey | None,
        mac_prefix: str,
    ) -> list[IpAllocation]:
        """Quota, VM, task, the addresses of its NICs and the claim's hold, in one
        transaction; the addresses held."""
        async with self._transaction() as conn:
            await self._consume(conn, vm.tenant_id, usage)
            await conn.execute(_VMS.insert_sql, *_VMS.encode(vm))
            await conn.execute(_TASKS.insert_sql, *_TASKS.encode(task))
            nics = await self._attach_nics(conn, vm, mac_prefix)
            if claim is not None:
                await self._hold_task(conn, claim, task.id)
        return nics

    async def create_volume(
        self,
        volume: Volume,
        task: Task,
        usage: Mapping[str, int],
        *,
        claim: IdempotencyKey | None = None,
    ) -> tuple[Volume, Task]:
        check_amounts(**usage)
        stamp = now()
        volume = msgspec.structs.replace(
            validate(volume), version=1, created_at=stamp, updated_at=stamp
        )
        task = msgspec.structs.replace(
            validate(task), version=1, created_at=stamp, updated_at=stamp
        )
        try:
            async with self._transaction() as conn:
                await self._consume(conn, volume.tenant_id, usage)
                await conn.execute(_VOLUMES.insert_sql, *_VOLUMES.encode(volume))
                await conn.execute(_TASKS.insert_sql, *_TASKS.encode(task))
                if claim is not None:
                    await self._hold_task(conn, claim, task.id)
        except InvalidRecord:
            await self._name_missing_reference(_VOLUMES, volume)
            raise
        return volume, task

    async def _hold_task(self, conn: Conn, claim: IdempotencyKey, task_id: str) -> None:
        args = (claim.principal, claim.key, claim.owner, task_id)
        if await conn.fetchrow(_HOLD_TASK, *args) is None:
            raise Conflict(
                f"Idempotency-Key {claim.key!r} is no longer held by this request "
                "(it expired, or another request with it went on): nothing was created"
            )

    async def reconcile_quotas(
        self, tenant_id: str | None = None, *, fix: bool = True
    ) -> list[QuotaDrift]:
        if tenant_id is not None:
            tenants = [tenant_id]
        else:
            async with self._reader() as conn:
                rows = await conn.fetch("SELECT DISTINCT tenant_id FROM quotas ORDER BY tenant_id")
            tenants = [r["tenant_id"] for r in rows]
        drift: list[QuotaDrift] = []
        for tenant in tenants:
            drift.extend(await self._reconcile_tenant(tenant, fix))
        for d in drift:
            _log.warning(
                "quota.drift_fixed" if fix else "quota.drift_found",
                tenant_id=d.tenant_id,
                resource=d.resource,
                recorded=d.recorded,
                actual=d.actual,
            )
        return drift

    async def _reconcile_tenant(self, tenant_id: str, fix: bool) -> list[QuotaDrift]:
        drift: list[QuotaDrift] = []
        # One transaction: the quota rows are locked first (a create takes them before it
        # writes its VM), so no create or delete lands between the count and the fix.
        async with self._transaction() as conn:
            rows = await conn.fetch(
                f"SELECT {_QUOTA_COLS} FROM quotas WHERE tenant_id = $1 "
                f"ORDER BY resource{self._row_lock}",
                tenant_id,
            )
            actual = await self._usage_of(conn, tenant_id)
            for quota in (_struct(r, Quota) for r in rows):
                if quota.resource not in actual or actual[quota.resource] == quota.used:
                    continue
                real = actual[quota.resource]
                drift.append(
                    QuotaDrift(
                        tenant_id=tenant_id,
                        resource=quota.resource,
                        recorded=quota.used,
                        actual=real,
                    )
                )
                if fix:
                    await conn.execute(_SET_USED, tenant_id, quota.resource, real)
        return drift

    async def _usage_of(self, conn: Conn, tenant_id: str) -> dict[str, int]:
        """What the tenant's VMs that are not deleted, volumes and public addresses hold, by
        resource."""
        usage = dict.fromkeys(QUOTA_RESOURCES, 0)
        rows = await conn.fetch(
            "SELECT v.spec AS spec, v.state AS state, t.kind AS kind, t.data AS data "
            "FROM vms v LEFT JOIN tasks t ON t.id = v.task_id "
            "WHERE v.tenant_id = $1 AND v.state <> $2",
            tenant_id,
            VMState.DELETED.value,
        )
        for row in rows:
            spec = msgspec.json.decode(row["spec"], type=VMSpec)
            if row["state"] == VMState.RECONFIGURING.value and row["kind"] == RESIZING_KIND:
                held = vm_usage_resizing(spec, msgspec.json.decode(row["data"]))
            else:
                held = vm_usage(spec)
            for resource, amount in held.items():
                usage[resource] += amount
        volumes = await conn.fetchrow(
            "SELECT count(*) AS n, COALESCE(sum(size_gib), 0) AS gib FROM volumes "
            "WHERE tenant_id = $1 AND state <> 'DELETED'",
            tenant_id,
        )
        usage["volumes"] = int(volumes["n"])
        usage["volume_gib"] = int(volumes["gib"])
        public = await conn.fetchrow(
            "SELECT count(*) AS n FROM ip_allocations a JOIN networks n ON n.id = a.network_id "
            "WHERE a.tenant_id = $1 AND a.released_at IS NULL AND n.tenant_id IS NULL",
            tenant_id,
        )
        usage["public_ips"] = int(public["n"])
        templates = await conn.fetch(
            "SELECT upload_size FROM templates WHERE tenant_id = $1", tenant_id
        )
        usage["template_gib"] = sum(
            template_usage(int(t["upload_size"]))["template_gib"] for t in templates
        )
        return usage

    async def update_charged(
        self,
        kind: type[R],
        id: str,
        /,
        *,
        expected_version: int,
        tenant_id: str | None,
        delta: Mapping[str, int],
        events: Sequence[OutboxEvent] = (),
        create: Sequence[Record] = (),
        end_task: Task | None = None,
        **changes: Any,
    ) -> R:
        table = table_of(kind)
        columns, values = table.encode_changes(changes)
        stamp = now()
        created = [
            msgspec.structs.replace(validate(r), version=1, created_at=stamp, updated_at=stamp)
            for r in create
        ]
        stamped = _outbox.stamp(events)
        missed: tuple[Table[Any], str, int] = (table, id, expected_version)
        try:
            async with self._transaction() as conn:
                await self._move_quota(conn, tenant_id, delta)
                row = await conn.fetchrow(
                    table.update_sql(columns), id, expected_version, stamp, *values
                )
                if row is None:
                    raise _Missed
                for record in created:
                    each = table_of(type(record))
                    await conn.execute(each.insert_sql, *each.encode(record))
                if end_task is not None:
                    missed = (_TASKS, end_task.id, end_task.version)
                    await self._end_task(conn, end_task, stamp)
                await _outbox.insert(conn, stamped)
        except _Missed:
            await self._why_missed(*missed)
        except InvalidRecord:
            for record in created:
                await self._name_missing_reference(table_of(type(record)), record)
            raise
        if stamped:
            self._outbox_written()
        return table.decode(row)

    async def _end_task(self, conn: Conn, task: Task, stamp: Any) -> None:
        """Set a stored task to the state and error ``task`` carries (compare-and-set at its
        version), inside the caller's transaction; _Missed if it is not at that version."""
        columns, values = _TASKS.encode_changes({"state": task.state, "error": task.error})
        sql = _TASKS.update_sql(columns)
        if await conn.fetchrow(sql, task.id, task.version, stamp, *values) is None:
            raise _Missed

    async def delete_charged(
        self,
        kind: type[R],
        id: str,
        /,
        *,
        expected_version: int,
        tenant_id: str | None,
        delta: Mapping[str, int],
    ) -> None:
        table = table_of(kind)
        sql = f"DELETE FROM {table.name} WHERE id = $1 AND version = $2 RETURNING id"
        try:
            async with self._transaction() as conn:
                await self._move_quota(conn, tenant_id, delta)
                if await conn.fetchrow(sql, id, expected_version) is None:
                    raise _Missed
        except _Missed:
            await self._why_missed(table, id, expected_version)

    async def _why_missed(self, table: Table[Any], id: str, expected: int) -> NoReturn:
        async with self._reader() as conn:
            row = await conn.fetchrow(f"SELECT version FROM {table.name} WHERE id = $1", id)
        if row is None:
            raise NotFound(f"{table.label} {id!r} not found")
        raise VersionConflict(
            f"{table.label} {id!r} is at version {row['version']}, not {expected}: read it again"
        )

    async def _move_quota(
        self, conn: Conn, tenant_id: str | None, delta: Mapping[str, int]
    ) -> None:
        """Consume the positive amounts of ``delta`` and give back the negative ones, inside
        the caller's transaction (QuotaExceeded rolls it back)."""
        if tenant_id is None:
            return
        await self._consume(conn, tenant_id, {r: d for r, d in delta.items() if d > 0})
        await self._give_back(conn, tenant_id, {r: -d for r, d in delta.items() if d < 0})
