"""The VM state machine of ARCHITECTURE.md, as data.

Every operation names the stable states it may start from, the transient state the VM shows while
it runs, and where it ends on success and on failure. ``None`` as a target means "the state the VM
was in before". The VM actor consults this table before it touches anything, so an illegal
operation is refused whole, with the current state and the allowed operations named.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cloudcore.errors import IllegalTransition
from cloudcore.store.records import VM, Task, VMState

__all__ = [
    "NOT_BUILT",
    "STABLE",
    "TRANSITIONS",
    "Operation",
    "Transition",
    "allowed_operations",
    "target_of",
    "transition",
]

S = VMState


class Operation(enum.StrEnum):
    DEPLOY = "deploy"  # schedule, claim, define, then start if asked
    START = "start"
    STOP = "stop"  # graceful with a hard fallback at the deadline
    REBOOT = "reboot"
    PAUSE = "pause"
    RESUME = "resume"  # from PAUSED (unpause) or SUSPENDED (restore)
    SUSPEND = "suspend"
    RECONFIGURE = "reconfigure"
    SNAPSHOT = "snapshot"
    REVERT_SNAPSHOT = "revert_snapshot"  # the VM's disks, memory and power as they were then
    DELETE_SNAPSHOT = "delete_snapshot"
    MIGRATE = "migrate"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Transition:
    operation: Operation
    sources: frozenset[VMState]
    transient: VMState
    success: VMState | None  # None: back to the source state
    failure: VMState | None  # None: back to the source state (with a fault)


def _t(
    op: Operation,
    sources: set[VMState],
    transient: VMState,
    success: VMState | None,
    failure: VMState | None = None,
) -> Transition:
    return Transition(op, frozenset(sources), transient, success, failure)


#: States a VM rests in between operations.
STABLE = frozenset(
    {S.DEFINED, S.PLACED, S.STOPPED, S.RUNNING, S.PAUSED, S.SUSPENDED, S.ERROR, S.UNKNOWN}
)

TRANSITIONS: dict[Operation, Transition] = {
    t.operation: t
    for t in (
        _t(Operation.DEPLOY, {S.DEFINED}, S.SCHEDULING, S.RUNNING),
        _t(Operation.START, {S.STOPPED}, S.STARTING, S.RUNNING),
        _t(Operation.STOP, {S.RUNNING, S.PAUSED}, S.STOPPING, S.STOPPED),
        _t(Operation.REBOOT, {S.RUNNING}, S.REBOOTING, S.RUNNING),
        _t(Operation.PAUSE, {S.RUNNING}, S.PAUSING, S.PAUSED),
        _t(Operation.RESUME, {S.PAUSED, S.SUSPENDED}, S.RESUMING, S.RUNNING),
        _t(Operation.SUSPEND, {S.RUNNING, S.PAUSED}, S.SUSPENDING, S.SUSPENDED),
        _t(Operation.RECONFIGURE, {S.STOPPED, S.RUNNING, S.PAUSED}, S.RECONFIGURING, None),
        _t(Operation.SNAPSHOT, {S.STOPPED, S.RUNNING, S.PAUSED}, S.SNAPSHOTTING, None),
        _t(Operation.REVERT_SNAPSHOT, {S.STOPPED, S.RUNNING, S.PAUSED}, S.SNAPSHOTTING, None),
        _t(Operation.DELETE_SNAPSHOT, {S.STOPPED, S.RUNNING, S.PAUSED}, S.SNAPSHOTTING, None),
        _t(Operation.MIGRATE, {S.RUNNING, S.STOPPED}, S.MIGRATING, None),
        _t(
            Operation.DELETE,
            {S.DEFINED, S.PLACED, S.STOPPED, S.RUNNING, S.PAUSED, S.SUSPENDED, S.ERROR, S.UNKNOWN},
            S.DELETING,
            S.DELETED,
            S.ERROR,
        ),
    )
}


#: Operations the table describes but nothing carries out yet: refused whole in every state
#: (UnsupportedOperation), so never offered as "allowed now".
NOT_BUILT: frozenset[Operation] = frozenset()


def allowed_operations(state: VMState) -> list[Operation]:
    """The operations a VM in ``state`` accepts now, in table order (none of NOT_BUILT)."""
    return [op for op, t in TRANSITIONS.items() if state in t.sources and op not in NOT_BUILT]


def transition(operation: Operation, state: VMState, vm_id: str = "") -> Transition:
    """The transition ``operation`` makes from ``state``; IllegalTransition if there is none."""
    t = TRANSITIONS[operation]
    if state not in t.sources:
        allowed = ", ".join(allowed_operations(state)) or "none until the current one finishes"
        subject = f"VM {vm_id}" if vm_id else "the VM"
        raise IllegalTransition(
            f"cannot {operation} {subject}: it is {state}; allowed now: {allowed}"
        )
    return t


def target_of(task: Task | None, vm: VM) -> VMState:
    """The state ``task`` leaves ``vm`` in when it succeeds (a deploy, or no task: the VM's
    desired state)."""
    if task is None or task.kind == "vm.deploy":
        return vm.desired_state
    t = TRANSITIONS[Operation(task.kind.removeprefix("vm."))]
    return t.success or vm.desired_state
