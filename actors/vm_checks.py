"""What a VM actor refuses before any claim or task: operations the hypervisor would refuse,
which would otherwise be accepted with 202 and leave a failed task and a fault on a healthy VM.
"""

from __future__ import annotations

from actors.operations import (
    DeleteSnapshotParams,
    OperationParams,
    ReconfigureParams,
    RevertSnapshotParams,
    SnapshotParams,
)
from cloudcore.errors import AlreadyExists, Conflict, NotFound
from cloudcore.store.records import VM, VMState
from hypervisor_drivers.base import HypervisorDriver

__all__ = ["check_live_limits", "refuse_doomed"]

#: States where a reconfigure is live, so bounded by the VM's maxima.
_LIVE = frozenset({VMState.RUNNING, VMState.PAUSED})


async def refuse_doomed(vm: VM, driver: HypervisorDriver, params: OperationParams) -> None:
    """Conflict (409) for a live reconfigure past the VM's maxima; AlreadyExists (409) for a
    snapshot name the VM already has; NotFound (404) to revert or delete one it has not.

    Snapshot names are asked of the hypervisor rather than kept in the store: it alone stays
    right after a crash lost a snapshot task's end, and after someone took or deleted a
    snapshot out of band. The price is one driver call per snapshot request."""
    if isinstance(params, ReconfigureParams) and vm.state in _LIVE:
        check_live_limits(vm, params)
    if isinstance(params, SnapshotParams | RevertSnapshotParams | DeleteSnapshotParams):
        taken = any(s.name == params.name for s in await driver.list_snapshots(vm.id))
        if taken and isinstance(params, SnapshotParams):
            raise AlreadyExists(f"VM {vm.id} already has a snapshot {params.name!r}")
        if not taken and not isinstance(params, SnapshotParams):
            raise NotFound(f"VM {vm.id} has no snapshot {params.name!r}")


def check_live_limits(vm: VM, params: ReconfigureParams) -> None:
    """Conflict naming the limit for a live size past the VM's maxima (the hypervisor would
    refuse it)."""
    max_cpus, max_memory = vm.spec.live_limits()
    for field, asked, limit in (
        ("cpus", params.cpus, max_cpus),
        ("memory_mib", params.memory_mib, max_memory),
    ):
        if asked is not None and asked > limit:
            raise Conflict(
                f"cannot reconfigure {vm.state} VM {vm.id} to {field}={asked}: its live limit "
                f"is max_{field}={limit} (stop it first, or create it with a higher maximum)"
            )
