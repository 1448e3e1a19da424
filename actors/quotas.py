"""What a VM counts against its tenant's quotas, taken when it is created and given back when
it is deleted (the store checks and counts atomically: :meth:`Store.consume_quota`)."""

from __future__ import annotations

from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import VM, VMSpec

__all__ = ["QUOTA_RESOURCES", "release_vm", "vm_usage"]

#: The resources a tenant's quotas may limit.
QUOTA_RESOURCES = ("vms", "cpus", "memory_mib", "volumes")

_log = get_logger("actors.quotas")


def vm_usage(spec: VMSpec) -> dict[str, int]:
    return {"vms": 1, "cpus": spec.cpus, "memory_mib": spec.memory_mib}


async def release_vm(store: Store, vm: VM) -> None:
    """Give back what a deleted VM held. A failure is logged, not raised: the VM is deleted
    either way, and usage never goes below zero, so an operator can correct it."""
    try:
        await store.release_quota(vm.tenant_id, vm_usage(vm.spec))
    except Exception as exc:
        _log.error("quota.release_failed", vm_id=vm.id, tenant_id=vm.tenant_id, error=str(exc))
