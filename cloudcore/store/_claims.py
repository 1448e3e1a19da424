"""Host claims: the one accounting of what the VMs on a host hold.

A host's ``cpus_used`` and ``memory_mib_used`` always equal the sum of the specs of the VMs
placed on it (``host_id`` set, state not DELETED). Every change of a VM's host or size goes
through one of the calls here, each one transaction that changes the VM record, the hosts'
claims and, when asked, the tenant's quota together: placement (:meth:`ClaimOps.place_vm`),
release on unplacing or deletion (:meth:`ClaimOps.unplace_vm`), resize
(:meth:`ClaimOps.resize_vm`) and a move between hosts (:meth:`ClaimOps.move_vm`). A VM's spec
is therefore not writable through the generic ``update``.

Locks are taken in one order, the VM row first, then hosts by id, then quotas by resource, so
concurrent calls on PostgreSQL cannot deadlock one another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from cloudcore.errors import (
    Conflict,
    InsufficientCapacity,
    InvalidRecord,
    VersionConflict,
)
from cloudcore.store import _outbox
from cloudcore.store._conn import Conn, check_amounts, now
from cloudcore.store._ipam import IpamOps
from cloudcore.store._table import table_of
from cloudcore.store.records import VM, Host, IpAllocation, OutboxEvent, VMSpec, VMState

__all__ = ["ClaimOps"]

_HOSTS = table_of(Host)
_VMS = table_of(VM)
_HOST_COLS = ", ".join(_HOSTS.columns)
_VM_COLS = ", ".join(_VMS.columns)

_CLAIM = f"""UPDATE hosts SET cpus_used = cpus_used + $2, memory_mib_used = memory_mib_used + $3
WHERE id = $1 AND admin_state = 'ENABLED' AND health = 'HEALTHY' AND power_state = 'ON'
AND cpus_used + $2 <= cpus AND memory_mib_used + $3 <= memory_mib RETURNING {_HOST_COLS}"""
_RELEASE = f"""UPDATE hosts SET cpus_used = cpus_used - $2, memory_mib_used = memory_mib_used - $3
WHERE id = $1 AND cpus_used >= $2 AND memory_mib_used >= $3 RETURNING {_HOST_COLS}"""
# A resize on the VM's own host: growth must fit (whatever the host's state: the VM is there
# already), a shrink never takes the claim below zero.
_ADJUST = f"""UPDATE hosts SET cpus_used = cpus_used + $2, memory_mib_used = memory_mib_used + $3
WHERE id = $1 AND cpus_used + $2 >= 0 AND memory_mib_used + $3 >= 0
AND ($2 <= 0 OR cpus_used + $2 <= cpus) AND ($3 <= 0 OR memory_mib_used + $3 <= memory_mib)
RETURNING {_HOST_COLS}"""
_PLACE = f"""UPDATE vms SET host_id = $3, state = $4, version = version + 1, updated_at = $5
WHERE id = $1 AND version = $2 AND host_id IS NULL RETURNING {_VM_COLS}"""


class ClaimOps(IpamOps):
    """Host claims and the VM changes that move them, in portable SQL."""

    async def claim_host_capacity(self, host_id: str, *, cpus: int, memory_mib: int) -> Host:
        check_amounts(cpus=cpus, memory_mib=memory_mib)
        async with self._writer() as conn:
            return await self._claim(conn, host_id, cpus, memory_mib)

    async def _claim(self, conn: Conn, host_id: str, cpus: int, memory_mib: int) -> Host:
        row = await conn.fetchrow(_CLAIM, host_id, cpus, memory_mib)
        if row is not None:
            return _HOSTS.decode(row)
        host = _HOSTS.decode(await self._must(conn, _HOSTS.get_sql, "Host", host_id))
        raise InsufficientCapacity(
            f"host {host_id!r} ({host.admin_state}, {host.health}, power {host.power_state}) has "
            f"{host.cpus - host.cpus_used} CPUs and {host.memory_mib - host.memory_mib_used} MiB "
            f"free, asked {cpus} CPUs and {memory_mib} MiB"
        )

    async def release_host_capacity(self, host_id: str, *, cpus: int, memory_mib: int) -> Host:
        check_amounts(cpus=cpus, memory_mib=memory_mib)
        async with self._writer() as conn:
            return await self._release(conn, host_id, cpus, memory_mib)

    async def _release(self, conn: Conn, host_id: str, cpus: int, memory_mib: int) -> Host:
        row = await conn.fetchrow(_RELEASE, host_id, cpus, memory_mib)
        if row is not None:
            return _HOSTS.decode(row)
        host = _HOSTS.decode(await self._must(conn, _HOSTS.get_sql, "Host", host_id))
        raise Conflict(
            f"host {host_id!r} has {host.cpus_used} CPUs and {host.memory_mib_used} MiB claimed, "
            f"cannot release {cpus} CPUs and {memory_mib} MiB"
        )

    async def _adjust(self, conn: Conn, vm_id: str, host_id: str, cpus: int, memory: int) -> Host:
        row = await conn.fetchrow(_ADJUST, host_id, cpus, memory)
        if row is not None:
            return _HOSTS.decode(row)
        host = _HOSTS.decode(await self._must(conn, _HOSTS.get_sql, "Host", host_id))
        if host.cpus_used + cpus < 0 or host.memory_mib_used + memory < 0:
            raise Conflict(
                f"host {host_id!r} has {host.cpus_used} CPUs and {host.memory_mib_used} MiB "
                f"claimed, cannot release {-cpus} CPUs and {-memory} MiB of VM {vm_id!r}"
            )
        raise InsufficientCapacity(
            f"host {host_id!r} has {host.cpus - host.cpus_used} CPUs and "
            f"{host.memory_mib - host.memory_mib_used} MiB free, VM {vm_id!r} needs "
            f"{max(cpus, 0)} more CPUs and {max(memory, 0)} more MiB"
        )

    # -- the VM changes ---------------------------------------------------------------------

    async def place_vm(
        self,
        vm_id: str,
        host_id: str,
        *,
        expected_version: int,
        state: VMState = VMState.PLACED,
    ) -> tuple[VM, Host]:
        state = VMState(state)
        async with self._transaction() as conn:
            row = await conn.fetchrow(_PLACE, vm_id, expected_version, host_id, state.value, now())
            if row is None:
                old = await self._vm(conn, vm_id, expected_version)
                raise Conflict(f"VM {vm_id!r} is already placed on host {old.host_id!r}")
            vm = _VMS.decode(row)
            host = await self._claim(conn, host_id, vm.spec.cpus, vm.spec.memory_mib)
        return vm, host

    async def unplace_vm(
        self,
        vm_id: str,
        *,
        expected_version: int,
        state: VMState = VMState.DEFINED,
        give_back: Mapping[str, int] | None = None,
        events: Sequence[OutboxEvent] = (),
        **changes: Any,
    ) -> VM:
        state = VMState(state)
        check_amounts(**(give_back or {}))
        async with self._transaction() as conn:
            old = await self._vm(conn, vm_id, expected_version)
            vm = await self._write_vm(conn, old, changes, host_id=None, state=state)
            if old.host_id is not None and old.state is not VMState.DELETED:
                await self._release(conn, old.host_id, old.spec.cpus, old.spec.memory_mib)
            if give_back:
                await self._give_back(conn, old.tenant_id, give_back)
            released: list[IpAllocation] = []
            if state is VMState.DELETED and old.state is not VMState.DELETED:
                # its NICs' addresses go with it, each with its nic.removed event
                released = await self._release_held_by_vm(conn, vm_id)
            await self._write_events(conn, events)
        if events or released:
            self._outbox_written()
        return vm

    async def resize_vm(
        self,
        vm_id: str,
        spec: VMSpec,
        *,
        expected_version: int,
        consume: Mapping[str, int] | None = None,
        give_back: Mapping[str, int] | None = None,
        events: Sequence[OutboxEvent] = (),
        **changes: Any,
    ) -> VM:
        check_amounts(**(consume or {}), **(give_back or {}))
        async with self._transaction() as conn:
            old = await self._vm(conn, vm_id, expected_version)
            vm = await self._write_vm(conn, old, changes, spec=spec)
            cpus, memory = spec.cpus - old.spec.cpus, spec.memory_mib - old.spec.memory_mib
            placed = old.host_id is not None and old.state is not VMState.DELETED
            if placed and (cpus or memory):
                assert old.host_id is not None
                await self._adjust(conn, vm_id, old.host_id, cpus, memory)
            if give_back:
                await self._give_back(conn, old.tenant_id, give_back)
            if consume:
                await self._consume(conn, old.tenant_id, consume)
            await self._write_events(conn, events)
        self._events_committed(events)
        return vm

    async def move_vm(
        self,
        vm_id: str,
        host_id: str,
        *,
        expected_version: int,
        target_held: bool = False,
        events: Sequence[OutboxEvent] = (),
        **changes: Any,
    ) -> tuple[VM, Host]:
        async with self._transaction() as conn:
            old = await self._vm(conn, vm_id, expected_version)
            if old.host_id is None or old.state is VMState.DELETED:
                raise Conflict(f"VM {vm_id!r} is on no host: place it, not move it")
            if old.host_id == host_id:
                raise Conflict(f"VM {vm_id!r} is already on host {host_id!r}")
            vm = await self._write_vm(conn, old, changes, host_id=host_id)
            cpus, memory = old.spec.cpus, old.spec.memory_mib
            target: Host | None = None
            for step in sorted((old.host_id, host_id)):  # hosts locked in id order
                if step == host_id and target_held:  # claimed before: only the VM is new there
                    target = _HOSTS.decode(await self._must(conn, _HOSTS.get_sql, "Host", host_id))
                elif step == host_id:
                    target = await self._claim(conn, host_id, cpus, memory)
                else:
                    await self._release(conn, old.host_id, cpus, memory)
            assert target is not None
            await self._write_events(conn, events)
        self._events_committed(events)
        return vm, target

    async def hold_for_vm(
        self,
        vm_id: str,
        host_id: str,
        *,
        expected_version: int,
        events: Sequence[OutboxEvent] = (),
        **changes: Any,
    ) -> tuple[VM, Host]:
        async with self._transaction() as conn:
            old = await self._vm(conn, vm_id, expected_version)
            _check_elsewhere(old, host_id)
            vm = await self._write_vm(conn, old, changes)
            host = await self._claim(conn, host_id, old.spec.cpus, old.spec.memory_mib)
            await self._write_events(conn, events)
        self._events_committed(events)
        return vm, host

    async def release_vm_hold(
        self,
        vm_id: str,
        host_id: str,
        *,
        expected_version: int,
        events: Sequence[OutboxEvent] = (),
        **changes: Any,
    ) -> tuple[VM, Host]:
        async with self._transaction() as conn:
            old = await self._vm(conn, vm_id, expected_version)
            _check_elsewhere(old, host_id)
            vm = await self._write_vm(conn, old, changes)
            host = await self._release(conn, host_id, old.spec.cpus, old.spec.memory_mib)
            await self._write_events(conn, events)
        self._events_committed(events)
        return vm, host

    # -- internals ----------------------------------------------------------------------------

    async def _write_events(self, conn: Conn, events: Sequence[OutboxEvent]) -> None:
        """The events a claim change causes, into the outbox inside its transaction."""
        if events:
            await _outbox.insert(conn, _outbox.stamp(events))

    def _events_committed(self, events: Sequence[OutboxEvent]) -> None:
        if events:
            self._outbox_written()  # wake the relay now that they are committed

    async def _vm(self, conn: Conn, vm_id: str, expected_version: int) -> VM:
        """The VM as stored, if at ``expected_version``; else NotFound or VersionConflict."""
        old = _VMS.decode(await self._must(conn, _VMS.get_sql, "VM", vm_id))
        if old.version != expected_version:
            raise VersionConflict(
                f"VM {vm_id!r} is at version {old.version}, not {expected_version}"
            )
        return old

    async def _write_vm(self, conn: Conn, old: VM, changes: Mapping[str, Any], **own: Any) -> VM:
        """Compare-and-set the VM read as ``old``: ``changes`` as ``update`` takes them, plus
        the claim's own fields (host, spec, state; ``update`` refuses the spec)."""
        clash = sorted(set(changes) & set(own))
        if clash:
            raise InvalidRecord(f"VM {', '.join(clash)} is set by the claim call itself")
        columns, values = _VMS.encode_changes(changes) if changes else ((), [])
        for column, value in own.items():
            raw = msgspec.to_builtins(value)
            columns += (column,)
            values.append(_VMS.encode_value(column, raw))
        row = await conn.fetchrow(_VMS.update_sql(columns), old.id, old.version, now(), *values)
        if row is None:  # changed between the read and this write: only on PostgreSQL
            raise VersionConflict(f"VM {old.id!r} changed while its claim was being moved")
        return _VMS.decode(row)


def _check_elsewhere(vm: VM, host_id: str) -> None:
    """A migration's hold is for a placed VM, on another host than its own."""
    if vm.host_id is None or vm.state is VMState.DELETED:
        raise Conflict(f"VM {vm.id!r} is on no host: nothing migrates")
    if vm.host_id == host_id:
        raise Conflict(f"VM {vm.id!r} is on host {host_id!r} already")
