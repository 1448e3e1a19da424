"""A host's admin state machine (CloudStack's maintenance states), as data.

What the operator allows on a host, apart from its health (what the monitor sees). Putting a
host in maintenance is a task that drains it (:mod:`actors.maintenance`): PREPARING_FOR_MAINTENANCE
while its VMs migrate away, then MAINTENANCE when none is left, or ERROR_IN_MAINTENANCE when some
could not move (the task names them and why). Cancel returns it to ENABLED from any of the
three. Only ENABLED takes new VMs (the scheduler's filter and the store's claim both check).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cloudcore.errors import IllegalTransition
from cloudcore.store.records import AdminState

__all__ = ["TRANSITIONS", "HostOperation", "HostTransition", "allowed", "host_transition"]

A = AdminState


class HostOperation(enum.StrEnum):
    ENABLE = "enable"
    DISABLE = "disable"
    MAINTAIN = "maintenance"  # start draining (again, from ERROR_IN_MAINTENANCE)
    DRAINED = "drained"  # the drain's own end: every VM moved
    DRAIN_FAILED = "drain_failed"  # the drain's own end: some VMs stay
    CANCEL = "cancel_maintenance"


@dataclass(frozen=True, slots=True)
class HostTransition:
    operation: HostOperation
    sources: frozenset[AdminState]
    target: AdminState


_IN_MAINTENANCE = {A.PREPARING_FOR_MAINTENANCE, A.MAINTENANCE, A.ERROR_IN_MAINTENANCE}

TRANSITIONS: dict[HostOperation, HostTransition] = {
    t.operation: t
    for t in (
        HostTransition(
            HostOperation.ENABLE,
            frozenset({A.ENABLED, A.DISABLED, A.MAINTENANCE, A.ERROR_IN_MAINTENANCE}),
            A.ENABLED,
        ),
        HostTransition(HostOperation.DISABLE, frozenset({A.ENABLED, A.DISABLED}), A.DISABLED),
        HostTransition(
            HostOperation.MAINTAIN,
            frozenset({A.ENABLED, A.DISABLED, A.ERROR_IN_MAINTENANCE}),
            A.PREPARING_FOR_MAINTENANCE,
        ),
        HostTransition(
            HostOperation.DRAINED, frozenset({A.PREPARING_FOR_MAINTENANCE}), A.MAINTENANCE
        ),
        HostTransition(
            HostOperation.DRAIN_FAILED,
            frozenset({A.PREPARING_FOR_MAINTENANCE}),
            A.ERROR_IN_MAINTENANCE,
        ),
        HostTransition(HostOperation.CANCEL, frozenset(_IN_MAINTENANCE), A.ENABLED),
    )
}

#: What an operator asks for (the drain's own ends are not offered).
_OPERATOR = (
    HostOperation.ENABLE,
    HostOperation.DISABLE,
    HostOperation.MAINTAIN,
    HostOperation.CANCEL,
)


def allowed(state: AdminState) -> list[HostOperation]:
    """What an operator may do to a host in ``state``, in table order."""
    return [op for op in _OPERATOR if state in TRANSITIONS[op].sources]


def host_transition(operation: HostOperation, state: AdminState, host_id: str) -> AdminState:
    """The admin state ``operation`` leads to from ``state``; IllegalTransition naming what
    is allowed now if it cannot."""
    t = TRANSITIONS[operation]
    if state not in t.sources:
        ops = ", ".join(allowed(state)) or "none"
        raise IllegalTransition(
            f"cannot {operation} host {host_id}: it is {state}; allowed now: {ops}"
        )
    return t.target
