"""The volume state machine of ARCHITECTURE.md (Storage), as data, like ``actors/lifecycle.py``.

Every operation names the states it may start from, the transient state the volume shows while
it runs, and where it ends on success and on failure; ``None`` means "the state it started from"
(a failed extend of an attached volume is still attached, with a fault). A volume record is born
CREATING by the request that makes it, so CREATE runs from CREATING (and runs again from there
when a crashed create is resumed). ARCHITECTURE.md's IN_USE is the store's ATTACHED.

The Volume actor consults this table before it touches anything, so an illegal operation is
refused whole, naming the volume's state and the operations allowed in it. One operation at a
time is the actor's rule (its record's ``task_id``), not the table's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cloudcore.errors import IllegalTransition, UnsupportedOperation
from cloudcore.store.records import VolumeState

__all__ = [
    "NOT_BUILT",
    "STABLE",
    "TRANSITIONS",
    "Transition",
    "VolumeOperation",
    "allowed_operations",
    "transition",
]

S = VolumeState


class VolumeOperation(enum.StrEnum):
    CREATE = "create"  # empty, from a snapshot, or a clone
    ATTACH = "attach"  # export to the VM's host, then the hypervisor attaches
    DETACH = "detach"  # the hypervisor detaches, then unexport
    EXTEND = "extend"  # grow the LUN, then tell a running guest (blockResize)
    SNAPSHOT = "snapshot"
    DELETE_SNAPSHOT = "delete_snapshot"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Transition:
    operation: VolumeOperation
    sources: frozenset[VolumeState]
    transient: VolumeState
    success: VolumeState | None  # None: back to the source state
    failure: VolumeState | None  # None: back to the source state (with a fault)


def _t(
    op: VolumeOperation,
    sources: set[VolumeState],
    transient: VolumeState,
    success: VolumeState | None,
    failure: VolumeState | None = None,
) -> Transition:
    return Transition(op, frozenset(sources), transient, success, failure)


#: States a volume rests in between operations.
STABLE = frozenset({S.AVAILABLE, S.ATTACHED, S.ERROR})

TRANSITIONS: dict[VolumeOperation, Transition] = {
    t.operation: t
    for t in (
        _t(VolumeOperation.CREATE, {S.CREATING}, S.CREATING, S.AVAILABLE, S.ERROR),
        _t(VolumeOperation.ATTACH, {S.AVAILABLE}, S.ATTACHING, S.ATTACHED, S.AVAILABLE),
        # A detach that fails half-way leaves the volume attached; the reconciler finds it.
        _t(VolumeOperation.DETACH, {S.ATTACHED}, S.DETACHING, S.AVAILABLE),
        _t(VolumeOperation.EXTEND, {S.AVAILABLE, S.ATTACHED}, S.EXTENDING, None),
        _t(VolumeOperation.SNAPSHOT, {S.AVAILABLE, S.ATTACHED}, S.SNAPSHOTTING, None),
        _t(VolumeOperation.DELETE_SNAPSHOT, {S.AVAILABLE, S.ATTACHED}, S.SNAPSHOTTING, None),
        _t(VolumeOperation.DELETE, {S.AVAILABLE, S.ERROR}, S.DELETING, S.DELETED, S.ERROR),
    )
}

#: Operations the table describes but no actor carries out yet: refused whole in every state
#: (UnsupportedOperation), so never offered as "allowed now". The Volume actor carries out all.
NOT_BUILT: frozenset[VolumeOperation] = frozenset()


def allowed_operations(state: VolumeState) -> list[VolumeOperation]:
    """The operations a volume in ``state`` accepts now, in table order (none of NOT_BUILT)."""
    return [op for op, t in TRANSITIONS.items() if state in t.sources and op not in NOT_BUILT]


def transition(operation: VolumeOperation, state: VolumeState, volume_id: str = "") -> Transition:
    """The transition ``operation`` makes from ``state``.

    Raises ``UnsupportedOperation`` for an operation in NOT_BUILT, and ``IllegalTransition``
    (naming the state and what is allowed in it) when ``state`` is not one of its sources.
    """
    subject = f"volume {volume_id}" if volume_id else "the volume"
    if operation in NOT_BUILT:
        raise UnsupportedOperation(f"cannot {operation} {subject}: not built yet")
    t = TRANSITIONS[operation]
    if state not in t.sources:
        allowed = ", ".join(allowed_operations(state)) or "none until the current one finishes"
        raise IllegalTransition(
            f"cannot {operation} {subject}: it is {state}; allowed now: {allowed}"
        )
    return t
