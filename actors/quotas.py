"""What a VM counts against its tenant's quotas, taken when it is created (in the create's own
transaction: :meth:`Store.create_vm`) and given back when it is deleted. The rule of what counts
is the store's (:mod:`cloudcore.store.usage`), so a reconciliation recomputes the same."""

from __future__ import annotations

from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import VM, VMSpec
from cloudcore.store.usage import QUOTA_RESOURCES, vm_usage

__all__ = ["QUOTA_RESOURCES", "release", "release_vm", "resize_delta", "vm_usage"]

_log = get_logger("actors.quotas")


def resize_delta(
    spec: VMSpec, cpus: int | None, memory_mib: int | None
) -> tuple[dict[str, int], dict[str, int]]:
    """What resizing ``spec`` takes more of (consumed when the resize is asked for) and what it
    gives back (released when it has succeeded)."""
    grow: dict[str, int] = {}
    shrink: dict[str, int] = {}
    for resource, old, new in (
        ("cpus", spec.cpus, cpus),
        ("memory_mib", spec.memory_mib, memory_mib),
    ):
        if new is not None and new > old:
            grow[resource] = new - old
        elif new is not None and new < old:
            shrink[resource] = old - new
    return grow, shrink


async def release_vm(store: Store, vm: VM) -> None:
    """Give back what a deleted VM held."""
    await release(store, vm.tenant_id, vm_usage(vm.spec), vm.id)


async def release(store: Store, tenant_id: str, amounts: dict[str, int], vm_id: str) -> None:
    """Give back quota. A failure is logged, not raised: the operation that freed it has
    happened either way, and usage never goes below zero, so an operator can correct it."""
    if not amounts:
        return
    try:
        await store.release_quota(tenant_id, amounts)
    except Exception as exc:
        _log.error("quota.release_failed", vm_id=vm_id, tenant_id=tenant_id, error=str(exc))
