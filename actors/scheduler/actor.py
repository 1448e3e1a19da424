"""The scheduler actor: one per datacenter, between the store and the engine.

It loads the datacenter's hosts and placed VMs when it starts, keeps the
:class:`~actors.scheduler.engine.SchedulerEngine` up to date from the messages host and VM actors
tell it, and places VMs: the engine picks candidates, the store's ``place_vm`` claims one
atomically. A claim the store refuses (another scheduler, or a host actor, changed the host since
the view was loaded) refreshes that host from the store and the next candidate is tried, so
several schedulers of one datacenter never overbook a host. Affinity groups are kept per
scheduler: run one scheduler per datacenter (a cluster singleton) for the group guarantees.

Expected refusals (NoValidHost, VersionConflict, ...) are raised to the asker, which also shows
them to this actor's supervisor: supervise it with :func:`resume_on_conflict` so that a refusal
does not restart it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar, assert_never

from actors.scheduler.affinity import group_key
from actors.scheduler.engine import Explanation, SchedulerEngine
from actors.scheduler.messages import (
    ClaimChanged,
    Explain,
    HostRemoved,
    HostUpdated,
    PlaceVM,
    ReleaseVM,
    ReservationEnded,
    ReserveHost,
    Resync,
    SchedulerMessage,
    SelectHosts,
)
from actors.scheduler.request import PlacementRequest
from actors.scheduler.weighers import Weigher
from cloudcore.errors import (
    ConfigError,
    Conflict,
    HostWaking,
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    NoValidHost,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, Directive
from cloudcore.store import Store
from cloudcore.store.records import VM, Host, HostPower, VMState

__all__ = ["SchedulerActor", "resume_on_conflict"]

_log = get_logger("actors.scheduler")

_PAGE = 1000

R = TypeVar("R", VM, Host)


def resume_on_conflict(error: Exception) -> Directive:
    """A supervisor decider for schedulers: a refusal (Conflict, NotFound, InvalidRequest such
    as InvalidRecord, ConfigError) is an answer to the asker, not a fault, so the actor resumes;
    anything else, a bare ValueError included, restarts it (and so reloads its view from the
    store)."""
    if isinstance(error, Conflict | NotFound | InvalidRequest | ConfigError):
        return Directive.RESUME
    return Directive.RESTART


class SchedulerActor(Actor[SchedulerMessage]):
    """Places the VMs of one datacenter. See :mod:`actors.scheduler.messages` for the replies.

    ``max_attempts`` bounds the claims one PlaceVM tries that the store refuses because the view
    was stale; past it the placement fails with NoValidHost rather than chasing a moving target.

    Power saving: when no ON host fits but a STANDBY one would, ``waker`` is called with its id
    (it wakes the host in the background and tells HostUpdated once it is ON) and the placement
    raises HostWaking, saying when to ask again (``wake_delay`` after the wake began): standby
    capacity counts as available after the wake-up delay.
    """

    def __init__(
        self,
        store: Store,
        datacenter_id: str,
        *,
        weigher: Weigher = Weigher.PACK,
        candidates: int = 3,
        max_attempts: int = 64,
        waker: Callable[[str], None] | None = None,
        wake_delay: float = 30.0,
    ) -> None:
        self._store = store
        self._waker = waker
        self._wake_delay = wake_delay
        self._waking: dict[str, float] = {}  # host id: when its wake-up should be done
        self._engine = SchedulerEngine(datacenter_id, weigher=weigher, candidates=candidates)
        self._max_attempts = max_attempts
        self._log = _log.bind(actor=self.context.path, datacenter_id=datacenter_id)

    @property
    def engine(self) -> SchedulerEngine:
        """The view this actor decides on (for introspection and tests)."""
        return self._engine

    async def started(self) -> None:
        await self._load()

    async def _load(self) -> int:
        """Build the view afresh from the store: every host of the datacenter, every VM placed.
        Claims changed while it loads reach the new view as messages, after it."""
        dc = self._engine.datacenter_id
        engine = SchedulerEngine(
            dc, weigher=self._engine.weigher, candidates=self._engine.candidates
        )
        async for host in _all(self._store, Host, dc):
            engine.upsert_host(host)
        placed = 0
        async for vm in _all(self._store, VM, dc):
            if vm.host_id is not None and vm.state is not VMState.DELETED:
                spec = vm.spec
                engine.adopt(
                    vm.id, vm.host_id, spec.cpus, spec.memory_mib, group_key(vm.tenant_id, spec)
                )
                placed += 1
        self._engine = engine
        self._log.info("scheduler.loaded", hosts=len(engine), placed_vms=placed)
        return len(engine)

    async def receive(
        self, message: SchedulerMessage
    ) -> VM | Explanation | int | list[str] | str | None:
        match message:
            case PlaceVM():
                return await self._place(message)
            case ReserveHost(vm=vm):
                return self._reserve(vm)
            case ReservationEnded(vm_id=vm_id, host_id=host_id, placed=placed):
                if placed:
                    self._log.info("vm.placed", vm_id=vm_id, host_id=host_id)
                else:
                    self._engine.released(vm_id)
                    await self._refresh(host_id)
                return None
            case ReleaseVM(vm_id=vm_id, host_id=host_id, group=group):
                self._engine.released(vm_id, host_id, message.cpus, message.memory_mib, group)
                return None
            case ClaimChanged(vm_id=vm_id, group=group, before=before, after=after):
                if before is None:
                    self._engine.released(vm_id)
                else:
                    self._engine.released(
                        vm_id, before.host_id, before.cpus, before.memory_mib, group
                    )
                if after is not None:
                    self._engine.claimed(after.host_id, after.cpus, after.memory_mib, vm_id, group)
                return None
            case Resync():
                return await self._load()
            case HostUpdated(host=host):
                self._engine.upsert_host(host)
                if host.power_state is HostPower.ON:
                    self._waking.pop(host.id, None)
                return None
            case HostRemoved(host_id=host_id):
                self._engine.remove_host(host_id)
                return None
            case Explain(spec=spec, tenant_id=tenant_id):
                request = PlacementRequest.for_spec(
                    spec, tenant_id=tenant_id, datacenter_id=self._engine.datacenter_id
                )
                return self._engine.explain(request)
            case SelectHosts(vm=vm):
                request = PlacementRequest.for_vm(vm)
                try:
                    return self._engine.select(request, exclude=vm.host_id)
                except NoValidHost as exc:  # a migration's target may be a host asleep
                    raise self._wake_for(request, exc) from None
            case _:
                assert_never(message)

    async def _place(self, message: PlaceVM) -> VM:
        vm = message.vm or await self._store.get(VM, message.vm_id)
        if vm.host_id is not None:  # say so now, not NoValidHost when it fits nowhere else
            raise Conflict(f"VM {vm.id!r} is already placed on host {vm.host_id!r}")
        request = PlacementRequest.for_vm(vm)
        refused = 0
        while True:
            try:
                chosen = self._engine.select(request)
            except NoValidHost as exc:
                raise self._wake_for(request, exc) from None
            for host_id in chosen:
                placed = await self._try(vm, host_id, message.expected_version)
                if placed is not None:
                    return placed
                refused += 1
                if refused >= self._max_attempts:
                    raise NoValidHost(
                        f"gave up placing VM {vm.id!r} ({request.describe()}) after {refused} "
                        "claims refused by the store: hosts are changing faster than the "
                        "scheduler learns of it",
                        explanation=self._engine.explain(request).rejected,
                    )

    def _wake_for(self, request: PlacementRequest, refused: NoValidHost) -> NoValidHost:
        """HostWaking if a host asleep fits ``request`` (woken now unless a wake runs), else
        ``refused`` as it is."""
        host_id = self._engine.standby_for(request) if self._waker is not None else None
        if host_id is None or self._waker is None:
            return refused
        now = time.monotonic()
        ready = self._waking.get(host_id)
        if ready is None or now > ready + self._wake_delay:  # none runs (or it failed): wake it
            ready = self._waking[host_id] = now + self._wake_delay
            self._log.info("scheduler.waking_host", host_id=host_id, request=request.describe())
            self._waker(host_id)
        ready_in = max(ready - now, 0.2)
        return HostWaking(
            f"{refused}; host {host_id} is in standby and being woken for it: ready in "
            f"{ready_in:.1f} s",
            host_id=host_id,
            ready_in=ready_in,
            explanation=refused.explanation,
        )

    def _reserve(self, vm: VM) -> str:
        """The best host for ``vm``, its claim held in the view until ReservationEnded."""
        if vm.host_id is not None:
            raise Conflict(f"VM {vm.id!r} is already placed on host {vm.host_id!r}")
        request = PlacementRequest.for_vm(vm)
        try:
            host_id = self._engine.select(request)[0]
        except NoValidHost as exc:
            raise self._wake_for(request, exc) from None
        spec = vm.spec
        self._engine.claimed(
            host_id, spec.cpus, spec.memory_mib, vm.id, group_key(vm.tenant_id, spec)
        )
        return host_id

    async def _try(self, vm: VM, host_id: str, expected_version: int) -> VM | None:
        """Place ``vm`` on ``host_id``; None if the store refused the host (view refreshed)."""
        try:
            placed, host = await self._store.place_vm(
                vm.id, host_id, expected_version=expected_version, state=VMState.PLACED
            )
        except InsufficientCapacity:
            self._log.info("scheduler.stale_host", host_id=host_id, vm_id=vm.id)
            await self._refresh(host_id)
            return None
        except NotFound:
            if await self._refresh(host_id):
                raise  # the host exists: the VM is what is missing
            return None
        spec = vm.spec
        self._engine.claimed(
            host_id, spec.cpus, spec.memory_mib, vm.id, group_key(vm.tenant_id, spec)
        )
        self._engine.upsert_host(host)  # the claimed amounts as the store has them now
        self._log.info("vm.placed", vm_id=vm.id, host_id=host_id)
        return placed

    async def _refresh(self, host_id: str) -> bool:
        """Reload one host into the view; False (and forgotten) if the store has no such host."""
        try:
            host = await self._store.get(Host, host_id)
        except NotFound:
            self._engine.remove_host(host_id)
            return False
        self._engine.upsert_host(host)
        return True


async def _all(store: Store, kind: type[R], datacenter_id: str) -> AsyncIterator[R]:
    after: str | None = None
    while True:
        page = await store.list(
            kind, where={"datacenter_id": datacenter_id}, after=after, limit=_PAGE
        )
        for record in page.items:
            yield record
        if (after := page.next_cursor) is None:
            return
