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

from cloudcore.store._spec import LeaseStore, NetworkStore
from cloudcore.store.listing import Order
from cloudcore.store.records import (
    VM,
    AuditEvent,
    Host,
    IdempotencyKey,
    OutboxEvent,
    Page,
    Quota,
    QuotaDrift,
    Record,
    StepState,
    Task,
    TaskStep,
    VMSpec,
    VMState,
    Volume,
)

__all__ = ["Store"]

R = TypeVar("R", bound=Record)


class Store(NetworkStore, LeaseStore, ABC):
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
        order: Order | None = None,
        count: bool = False,
    ) -> Page[R]:
        """One page of records of ``kind``, in id order unless ``order`` says otherwise.

        ``where`` maps filter fields to values (equality; None matches a missing value;
        :class:`~cloudcore.store.listing.Not` excludes one value). Only indexed fields may be
        filtered on: for VMs ``tenant_id``, ``datacenter_id``, ``host_id``, ``state``, ``name``;
        others raise InvalidRecord naming the allowed ones. ``order`` sorts by a column that is
        never NULL (then by id), ascending or descending; another raises InvalidRecord naming
        the sortable ones. ``after`` is the ``next_cursor`` of the previous page of the same
        listing. ``limit`` is 1 to 1000. ``count``: also say in ``total`` how many records the
        filters match (one more query; a total of 10,000 or more may be a few seconds old: see
        ``cloudcore.store._totals``).
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
        ``state`` (compare-and-set on the VM). A host's claim is always the sum of the specs of
        the VMs on it: this, :meth:`unplace_vm`, :meth:`resize_vm` and :meth:`move_vm` are the
        only calls that change a VM's host or spec. Raises NotFound, VersionConflict,
        InsufficientCapacity, Conflict (the VM is already on a host); then nothing changed.
        """

    @abstractmethod
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
        """In one transaction: release exactly the VM's claim (its spec) on its host, clear its
        host, set ``state`` and ``changes`` (fields as :meth:`update` takes them), give
        ``give_back`` back to the tenant's quotas (a deleted VM's usage) and write ``events``
        to the outbox (as :meth:`update` does). A VM without a host
        only gets its record changed (and the quota). Raises NotFound, VersionConflict,
        InvalidRecord; then nothing changed.
        """

    @abstractmethod
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
        """In one transaction: set the VM's ``spec`` (and ``changes``, with ``events``), move its
        host's claim by
        the difference (growth must fit the host's free capacity, whatever the host's state: the
        VM is there already; a shrink gives back), and consume and give back the tenant's
        quotas. The only way to change a VM's spec (``update`` refuses it). Raises NotFound,
        VersionConflict, InsufficientCapacity (naming the host, what is free and what the VM
        needs), QuotaExceeded, InvalidRecord; then nothing changed.
        """

    @abstractmethod
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
        """In one transaction: claim the VM's spec on ``host_id`` (ENABLED, HEALTHY, fits: as
        :meth:`place_vm`), release it on the VM's current host, set the VM's host and
        ``changes``, and write ``events``. Returns the VM and the target host. Raises NotFound,
        VersionConflict,
        InsufficientCapacity, Conflict (the VM is on no host, or already on ``host_id``);
        then nothing changed. ``target_held``: the VM's spec was claimed on ``host_id`` already
        (:meth:`hold_for_vm`, a migration's hold before anything moved), so the
        transaction only releases it on the source.
        """

    @abstractmethod
    async def hold_for_vm(
        self,
        vm_id: str,
        host_id: str,
        *,
        expected_version: int,
        events: Sequence[OutboxEvent] = (),
        **changes: Any,
    ) -> tuple[VM, Host]:
        """In one transaction: claim the VM's spec on ``host_id`` (ENABLED, HEALTHY, fits: as
        :meth:`place_vm`) as a hold for a migration to it, write ``changes`` to the VM
        (compare-and-set; its host stays) and ``events``. The hold ends with the VM, never on
        its own: :meth:`move_vm` with ``target_held`` uses it, :meth:`release_vm_hold` gives it
        back. Raises NotFound, VersionConflict, InsufficientCapacity, Conflict (the VM is on
        no host, or on ``host_id``); then nothing changed."""

    @abstractmethod
    async def release_vm_hold(
        self,
        vm_id: str,
        host_id: str,
        *,
        expected_version: int,
        events: Sequence[OutboxEvent] = (),
        **changes: Any,
    ) -> tuple[VM, Host]:
        """In one transaction: give back the hold :meth:`hold_for_vm` took on ``host_id`` for
        the VM (its spec), write ``changes`` to the VM (compare-and-set) and ``events``. A
        migration that did not happen ends with this, so a hold is released exactly once.
        Raises NotFound, VersionConflict, Conflict (less than the spec claimed there)."""

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

    @abstractmethod
    async def create_vm(
        self,
        vm: VM,
        task: Task,
        usage: Mapping[str, int],
        *,
        claim: IdempotencyKey | None = None,
        mac_prefix: str | None = None,
    ) -> tuple[VM, Task]:
        """In one transaction: consume ``usage`` of the VM's tenant's quotas, store ``vm`` and
        its deploy ``task``, hold an address and a MAC (made from ``mac_prefix``, by default
        ``52:54:00``) for each of ``vm.spec.nics`` as :meth:`allocate_ip` does (a ``nic.added``
        event each; a public address counts against ``public_ips``) and, with ``claim`` (held
        by this request, see :meth:`claim_idempotency_key`), record the task against that
        Idempotency-Key. Returns both as stored. All or nothing: QuotaExceeded names the
        resource, InvalidRecord the field (``tenant_id``, ``datacenter_id``, ... naming a
        record that does not exist; ``nics[i].network_id`` a network that does not exist, is
        another tenant's private one or in another datacenter; ``nics[i].address`` outside
        its ranges), AlreadyExists a taken id or address (naming its holder),
        AddressesExhausted a full network, Conflict a ``claim`` this request no longer holds;
        then nothing is written. BackendUnavailable: committed or not, never half. The
        addresses are released (``nic.removed`` events) in the transaction that marks the VM
        DELETED (:meth:`unplace_vm`).
        """

    @abstractmethod
    async def create_volume(
        self,
        volume: Volume,
        task: Task,
        usage: Mapping[str, int],
        *,
        claim: IdempotencyKey | None = None,
    ) -> tuple[Volume, Task]:
        """As :meth:`create_vm`, for a volume and the task that creates it on its pool: quota
        (``volumes``, ``volume_gib``), record, task and Idempotency-Key in one transaction, all
        or nothing."""

    @abstractmethod
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
        """:meth:`update` and, in the same transaction, move ``tenant_id``'s quota usage by
        ``delta`` (positive amounts consumed, negative given back; ``tenant_id`` None: no
        quota), insert the records of ``create`` (as :meth:`create` stores them: the task the
        change begins, a record it makes) and set ``end_task``, a stored task, to the ``state``
        and ``error`` it carries (compare-and-set at its ``version``: the task the change
        ends). How a record and the task that changes it never disagree after a crash: an
        extend takes its growth with its task, a finished operation gives back what it
        should and ends its task. All or nothing: QuotaExceeded names the resource; NotFound
        and VersionConflict name the record (``kind``'s or the task) that is missing or
        moved on; InvalidRecord, AlreadyExists (a record of ``create``).
        """

    @abstractmethod
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
        """:meth:`delete` at ``expected_version`` and, in the same transaction, move the
        tenant's quota usage by ``delta`` (as :meth:`update_charged`)."""

    @abstractmethod
    async def reconcile_quotas(
        self, tenant_id: str | None = None, *, fix: bool = True
    ) -> builtins.list[QuotaDrift]:
        """Recompute the usage of every quota (of ``tenant_id``, or of every tenant) from what
        exists (:mod:`cloudcore.store.usage`: VMs not DELETED, the larger size of a VM whose
        resize is in flight, volumes not DELETED, addresses held in public networks) and
        return each usage that differs; with ``fix`` set it to what exists, tenant by tenant
        in one transaction each, so a create or delete running meanwhile is counted once.
        Resources the rule does not know are left alone.
        """

    # -- idempotent requests ------------------------------------------------------------------

    @abstractmethod
    async def claim_idempotency_key(
        self, principal: str, key: str, fingerprint: str, *, ttl: float, lease: float
    ) -> tuple[IdempotencyKey, bool]:
        """Hold ``key`` of ``principal`` for one attempt of a request, or find who holds it.

        ``(record, True)``: this attempt holds it (the key is new, expired, or was held by an
        attempt that left neither a task nor an answer for ``lease`` seconds, and
        ``fingerprint`` matches); it lives ``ttl`` seconds. ``(record, False)``: another
        attempt holds it or has answered; the caller compares ``fingerprint``, gives the
        stored answer again, or waits. Atomic: of concurrent attempts one holds the key.
        """

    @abstractmethod
    async def get_idempotency_key(self, principal: str, key: str) -> IdempotencyKey | None:
        """The key as stored, None if unknown or expired."""

    @abstractmethod
    async def answer_idempotency_key(
        self, claim: IdempotencyKey, *, status: int, location: str | None, body: str
    ) -> bool:
        """Store the answer given under a key this attempt holds; False if it no longer does."""

    @abstractmethod
    async def release_idempotency_key(self, claim: IdempotencyKey) -> None:
        """Let go of a key this attempt holds and did nothing durable under (no task, no
        answer): a retry runs the request again. A no-op otherwise."""

    @abstractmethod
    async def purge_idempotency_keys(self) -> int:
        """Forget expired keys; how many."""

    # -- task journal -----------------------------------------------------------------------

    @abstractmethod
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
        """Journal a new step of a task (in ``state``, PENDING unless told) before it runs;
        return it, numbered.

        The step, the task's ``step_count`` and ``events`` are written in one transaction (the
        task's version does not change); each event's data gets ``seq``, the step's number,
        which the caller cannot know before. Raises NotFound (no such task, nothing written).
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
