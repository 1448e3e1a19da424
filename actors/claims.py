"""The one accounting of host claims, on the actors' side.

A host's claim is the sum of the specs of the VMs on it. Placement (the scheduler, through
``Store.place_vm``), resize, a move between hosts and release (rollback of a deploy, deletion)
all change it through the store calls used here, each one transaction with the VM record and,
where the change frees or takes any, the tenant's quota. After the store has changed, the
scheduler of the VM's datacenter is told (:class:`~actors.scheduler.messages.ClaimChanged`), so
its view follows the store without waiting for a restart.

A resize holds the larger of the old and the new size while it runs: :func:`begin_resize`
claims the growth up front (refused with InsufficientCapacity naming the host and the amounts,
before any task starts); :func:`end_resize` settles to the new size on success (giving back what
a shrink frees) or to the old one on failure (giving back the growth).
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors.quotas import vm_usage
from actors.scheduler.affinity import group_key
from actors.scheduler.messages import ClaimChanged, SchedulerMessage, VMClaim
from cloudcore.runtime import ActorRef
from cloudcore.store import Store
from cloudcore.store.records import VM, VMSpec, VMState

__all__ = ["begin_resize", "delete", "end_resize", "move", "release", "resized", "tell_view"]


def resized(spec: VMSpec, cpus: int | None, memory_mib: int | None) -> VMSpec:
    """``spec`` with the sizes given (None keeps the current one)."""
    return msgspec.structs.replace(
        spec, cpus=cpus or spec.cpus, memory_mib=memory_mib or spec.memory_mib
    )


def _held(old: VMSpec, new: VMSpec) -> VMSpec:
    return msgspec.structs.replace(
        old, cpus=max(old.cpus, new.cpus), memory_mib=max(old.memory_mib, new.memory_mib)
    )


def _difference(old: VMSpec, new: VMSpec) -> tuple[dict[str, int], dict[str, int]]:
    """(what ``new`` takes more of, what it gives back) against ``old``, as quota amounts."""
    before, after = vm_usage(old), vm_usage(new)
    more = {k: after[k] - before[k] for k in before if after[k] > before[k]}
    less = {k: before[k] - after[k] for k in before if after[k] < before[k]}
    return more, less


def tell_view(view: ActorRef[SchedulerMessage] | None, before: VM, after: VM) -> None:
    """Tell the scheduler ``view`` that a VM's claim went from ``before`` to ``after``."""
    if view is None:
        return
    old, new = VMClaim.of(before), VMClaim.of(after)
    if old == new:
        return
    view.tell(
        ClaimChanged(
            vm_id=after.id, group=group_key(after.tenant_id, after.spec), before=old, after=new
        )
    )


async def begin_resize(
    store: Store, vm: VM, target: VMSpec, view: ActorRef[SchedulerMessage] | None, **changes: Any
) -> VM:
    """Hold the larger of ``vm``'s size and ``target`` (claim and quota of the growth), with
    ``changes``, in one transaction. Raises InsufficientCapacity, QuotaExceeded,
    VersionConflict; then nothing changed."""
    held = _held(vm.spec, target)
    consume, _ = _difference(vm.spec, held)
    after = await store.resize_vm(
        vm.id, held, expected_version=vm.version, consume=consume, **changes
    )
    tell_view(view, vm, after)
    return after


async def end_resize(
    store: Store, vm: VM, final: VMSpec, view: ActorRef[SchedulerMessage] | None, **changes: Any
) -> VM:
    """Settle a resize :func:`begin_resize` started at ``final`` (the new size on success, the
    old one on failure), giving back what ``vm`` holds beyond it, with ``changes``."""
    _, give_back = _difference(vm.spec, final)
    after = await store.resize_vm(
        vm.id, final, expected_version=vm.version, give_back=give_back, **changes
    )
    tell_view(view, vm, after)
    return after


async def release(
    store: Store,
    vm: VM,
    view: ActorRef[SchedulerMessage] | None,
    *,
    state: VMState = VMState.DEFINED,
    **changes: Any,
) -> VM:
    """Take ``vm`` off its host (a deploy rolled back), releasing exactly what it holds."""
    after = await store.unplace_vm(vm.id, expected_version=vm.version, state=state, **changes)
    tell_view(view, vm, after)
    return after


async def delete(
    store: Store, vm: VM, view: ActorRef[SchedulerMessage] | None, **changes: Any
) -> VM:
    """Mark ``vm`` DELETED, releasing exactly what it holds on its host and giving its usage
    back to the tenant's quotas, in one transaction."""
    after = await store.unplace_vm(
        vm.id,
        expected_version=vm.version,
        state=VMState.DELETED,
        give_back=vm_usage(vm.spec),
        **changes,
    )
    tell_view(view, vm, after)
    return after


async def move(
    store: Store,
    vm: VM,
    host_id: str,
    view: ActorRef[SchedulerMessage] | None,
    *,
    target_held: bool = False,
    **changes: Any,
) -> VM:
    """Move ``vm``'s claim to ``host_id`` (claimed there, released where it was) with
    ``changes``, in one transaction. ``target_held``: a migration claimed it on ``host_id``
    before it began (:meth:`Store.claim_host_capacity`), so only the source is released. Raises
    InsufficientCapacity, Conflict, VersionConflict."""
    after, _ = await store.move_vm(
        vm.id, host_id, expected_version=vm.version, target_held=target_held, **changes
    )
    tell_view(view, vm, after)
    return after
