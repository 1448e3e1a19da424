"""The store interface: the orchestrator's durable truth.

A :class:`Store` keeps what tenants asked for (desired state), what hypervisors report (observed
state) and the journal of every task in flight. Two implementations run the same contract suite:
PostgreSQL (``cloudcore.store.postgres``, production) and SQLite (``cloudcore.store.sqlite``,
embedded). Get one with :func:`cloudcore.store.open_store`.

Rules every implementation keeps:

- Records with an id (:class:`~cloudcore.store.records.Record`) carry a ``version``. ``update``
  and ``delete`` compare it with ``expected_version`` and change the row only if they match, in
  one statement; otherwise :class:`~cloudcore.errors.VersionConflict`. Concurrent writers never
  lose each other's changes.
- A call that changes several rows is one transaction: all or nothing.
- Bad values raise :class:`~cloudcore.errors.InvalidRecord` naming the field; nothing is written.
- A database that cannot be reached raises :class:`~cloudcore.errors.BackendUnavailable`
  (``retryable``); the store reconnects by itself once it is back.
- Listings page by an opaque cursor in id order; ids made by
  :func:`~cloudcore.store.records.new_id` sort by creation time.
- Events live in the store first (a transactional outbox): a write that takes ``events``
  stores them in the same transaction as its change, both or neither, each with a new unique
  id. A relay (:class:`cloudcore.events.relay.OutboxRelay`) publishes them to the event bus at
  least once, in the order written, and removes them; consumers de-duplicate by id.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from cloudcore.store.records import (
    VM,
    AuditEvent,
    Host,
    IpAllocation,
    OutboxEvent,
    Page,
    Quota,
    Record,
    StepState,
    TaskStep,
    VMState,
)

__all__ = ["Store"]

R = TypeVar("R", bound=Record)


class Store(ABC):
    """Durable state of the orchestrator. All methods are coroutines safe to call concurrently."""

    # -- generic records -------------------------------------------------------------------

    @abstractmethod
    async def create(self, record: R, *, events: Sequence[OutboxEvent] = ()) -> R:
        """Store a new record; return it as stored (``version`` 1, times set).

        ``events`` are written to the outbox in the same transaction. Raises AlreadyExists
        (same id or unique name), InvalidRecord (a field is malformed or references a record
        that does not exist, or an event is malformed); then nothing is written.
        """

    @abstractmethod
    async def get(self, kind: type[R], id: str, /) -> R:
        """The record of type ``kind`` with ``id``. Raises NotFound."""

    @abstractmethod
    async def list(
        self,
        kind: type[R],
        /,
        *,
        where: Mapping[str, object] | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page[R]:
        """One page of records of ``kind`` in id order.

        ``where`` maps filter fields to values (equality; None matches a missing value). Only
        indexed fields may be filtered on: for VMs ``tenant_id``, ``datacenter_id``, ``host_id``,
        ``state``; others raise InvalidRecord naming the allowed ones. ``after`` is the
        ``next_cursor`` of the previous page. ``limit`` is 1 to 1000.
        """

    @abstractmethod
    async def count_by(self, kind: type[R], field: str, /) -> dict[str, int]:
        """How many records of ``kind`` there are for each value of ``field`` (one grouped
        query, e.g. VMs by ``state``, hosts by ``health``).

        Values no record has are absent; records whose ``field`` is unset are counted under
        ``""``. ``field`` must be one of the kind's filter fields (see :meth:`list`), else
        InvalidRecord naming the allowed ones. Reads only; a snapshot, not a lock.
        """

    @abstractmethod
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
        """Compare-and-set: apply ``changes`` if the stored version is ``expected_version``,
        and write ``events`` to the outbox in the same transaction (none if it fails).

        Returns the record as stored, its version one higher, once committed. One statement
        (PostgreSQL lets concurrent updates of the same fields share a statement and a commit,
        each still compare-and-set on its own row). Raises NotFound, VersionConflict (the record
        changed since it was read: read again and decide again), InvalidRecord (unknown field, a
        field the store manages, or a malformed value). BackendUnavailable means the update may
        or may not have been applied: retrying it is safe (VersionConflict if it was).
        """

    @abstractmethod
    async def delete(
        self, kind: type[R], id: str, /, *, expected_version: int | None = None
    ) -> None:
        """Delete a record, if ``expected_version`` is given only at that version.

        Raises NotFound, VersionConflict, Conflict (other records still refer to it).
        """

    # -- hosts and placement ----------------------------------------------------------------

    @abstractmethod
    async def claim_host_capacity(self, host_id: str, *, cpus: int, memory_mib: int) -> Host:
        """Atomically add ``cpus`` and ``memory_mib`` to the host's claimed capacity.

        One conditional update: it succeeds only if the host is ENABLED and HEALTHY and the
        claim fits, so concurrent placements cannot overbook. Raises NotFound,
        InsufficientCapacity, InvalidRecord (negative amounts).
        """

    @abstractmethod
    async def release_host_capacity(self, host_id: str, *, cpus: int, memory_mib: int) -> Host:
        """Atomically give back claimed capacity. Raises NotFound, Conflict (more than claimed)."""

    @abstractmethod
    async def place_vm(
        self,
        vm_id: str,
        host_id: str,
        *,
        expected_version: int,
        state: VMState = VMState.PLACED,
    ) -> tuple[VM, Host]:
        """In one transaction: claim the VM's spec on ``host_id`` and set the VM's host and
        ``state`` (compare-and-set on the VM). Raises NotFound, VersionConflict,
        InsufficientCapacity, Conflict (the VM is already on a host); then nothing changed.
        """

    @abstractmethod
    async def unplace_vm(
        self, vm_id: str, *, expected_version: int, state: VMState = VMState.DEFINED
    ) -> VM:
        """In one transaction: release the VM's claim on its host, clear its host, set
        ``state``. A VM without a host only gets its state set. Raises NotFound, VersionConflict.
        """

    # -- quotas -----------------------------------------------------------------------------

    @abstractmethod
    async def set_quota(self, tenant_id: str, resource: str, maximum: int) -> Quota:
        """Create or change the tenant's limit of ``resource``; usage is kept."""

    @abstractmethod
    async def get_quotas(self, tenant_id: str) -> builtins.list[Quota]:
        """The tenant's quotas, by resource name. Resources without one are unlimited."""

    @abstractmethod
    async def consume_quota(
        self, tenant_id: str, amounts: Mapping[str, int]
    ) -> builtins.list[Quota]:
        """Check and consume ``amounts`` of several resources at once, all or nothing.

        Resources without a quota are unlimited and not counted. Raises QuotaExceeded naming the
        first resource that does not fit; then nothing is consumed.
        """

    @abstractmethod
    async def release_quota(
        self, tenant_id: str, amounts: Mapping[str, int]
    ) -> builtins.list[Quota]:
        """Give back ``amounts`` (usage never goes below zero), all in one transaction."""

    # -- task journal -----------------------------------------------------------------------

    @abstractmethod
    async def append_step(
        self,
        task_id: str,
        name: str,
        *,
        deadline: datetime | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> TaskStep:
        """Journal a new step of a task (state PENDING) before it runs; return it, numbered.

        The step and the task's ``step_count`` change in one transaction (the task's version
        does not change). Raises NotFound (no such task).
        """

    @abstractmethod
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
        """Record the outcome (or progress) of a step; ``data`` None keeps it. ``events`` are
        written to the outbox in the same transaction. Raises NotFound (nothing written)."""

    @abstractmethod
    async def list_steps(self, task_id: str) -> builtins.list[TaskStep]:
        """The journaled steps of a task, in order (empty for an unknown task)."""

    # -- outbox of events --------------------------------------------------------------------

    @abstractmethod
    async def write_events(self, events: Sequence[OutboxEvent]) -> builtins.list[OutboxEvent]:
        """Write events that come with no change of a record, in one transaction; return them
        as stored (ids and times set). Raises InvalidRecord (nothing written)."""

    @abstractmethod
    async def read_outbox(self, limit: int = 500) -> builtins.list[OutboxEvent]:
        """Up to ``limit`` events not yet removed, in the order written (``seq``). A row that
        commits late may carry a lower ``seq`` than one already read: read from the head again
        rather than after the last ``seq``."""

    @abstractmethod
    async def remove_from_outbox(self, seqs: Sequence[int]) -> None:
        """Remove the events of these ``seq`` (published). Idempotent."""

    @abstractmethod
    def watch_outbox(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (in the event loop, no arguments) after every commit of this store
        object that wrote events; returns the function that stops watching. Writes of other
        processes are not seen: a relay also polls."""

    # -- audit trail ------------------------------------------------------------------------

    @abstractmethod
    async def record_event(
        self,
        type: str,
        subject: str,
        *,
        tenant_id: str | None = None,
        actor: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an event to the audit trail; its ``id`` is higher than every earlier one's."""

    @abstractmethod
    async def list_events(
        self,
        *,
        subject: str | None = None,
        tenant_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page[AuditEvent]:
        """Audit events in the order recorded, optionally of one subject or one tenant."""

    # -- IP addresses -----------------------------------------------------------------------

    @abstractmethod
    async def allocate_ip(
        self,
        network_id: str,
        address: str,
        *,
        vm_id: str | None = None,
        tenant_id: str | None = None,
    ) -> IpAllocation:
        """Hold ``address`` of a network. Raises AlreadyExists (held), InvalidRecord (network)."""

    @abstractmethod
    async def release_ip(self, network_id: str, address: str) -> None:
        """Give an address back. Raises NotFound if it is not held."""

    @abstractmethod
    async def list_ips(self, network_id: str) -> builtins.list[IpAllocation]:
        """The addresses held in a network, in address text order."""

    # -- schema and life cycle --------------------------------------------------------------

    @abstractmethod
    async def schema_version(self) -> int:
        """The schema version of the database (0: empty)."""

    @abstractmethod
    async def upgrade(self) -> builtins.list[int]:
        """Apply the migrations the database lacks, each in a transaction; return their versions.

        Safe to run concurrently from several nodes (PostgreSQL serialises them with a lock).
        Raises SchemaMismatch if the database is newer than this code.
        """

    @abstractmethod
    async def close(self) -> None:
        """Close connections. Idempotent."""
