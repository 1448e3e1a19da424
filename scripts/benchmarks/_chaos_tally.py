"""The pure part of the chaos benchmark: from what the clients, the subscriber and the final
reads recorded, count what was accepted, lost, stuck, duplicated, drifted and missed.

No I/O here, so the counting is unit-tested on its own (tests/unit/test_chaos_tally.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "QUOTA_RESOURCES",
    "TERMINAL",
    "Request",
    "VMSeen",
    "accepted_tasks",
    "duplicated",
    "events_missing",
    "lost",
    "quota_drift",
    "unfinished",
]

#: Task states a task never leaves.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "COMPENSATED", "CANCELLED"})
#: The resources a VM counts against its tenant's quotas.
QUOTA_RESOURCES = ("vms", "cpus", "memory_mib")


@dataclass
class Request:
    """One client request (one Idempotency-Key), over all its attempts."""

    key: str
    name: str
    #: The task id of every 202 received, in order (more than one distinct id: the retries
    #: were not recognised as the same request).
    task_ids: list[str] = field(default_factory=list)
    #: The outcome of every attempt: an HTTP status, or the name of the client error.
    attempts: list[str] = field(default_factory=list)
    #: The final answer: "202", another status that was not retried, or None (none before the
    #: run's deadline).
    final: str | None = None


@dataclass(frozen=True)
class VMSeen:
    """A VM as listed at the end of the run."""

    id: str
    name: str
    state: str
    cpus: int
    memory_mib: int


def accepted_tasks(requests: Iterable[Request]) -> set[str]:
    """Every task id a 202 named."""
    return {task_id for r in requests for task_id in r.task_ids}


def unfinished(tasks: Iterable[str], states: Mapping[str, str | None]) -> int:
    """Tasks not in a terminal state (a task the store does not have counts: it is not)."""
    return sum(1 for t in tasks if states.get(t) not in TERMINAL)


def lost(requests: Iterable[Request], states: Mapping[str, str | None]) -> int:
    """Accepted tasks never terminal: still running, or unknown to the store."""
    return unfinished(accepted_tasks(requests), states)


def duplicated(requests: Iterable[Request], vms: Iterable[VMSeen]) -> tuple[int, int]:
    """(client requests that created more than one VM, the extra VMs they created). A VM
    belongs to the request whose unique name it carries, whatever its state now."""
    per_name = Counter(vm.name for vm in vms)
    extra = [per_name[r.name] - 1 for r in requests if per_name[r.name] > 1]
    return len(extra), sum(extra)


def quota_drift(used: Mapping[str, int], vms: Iterable[VMSeen]) -> tuple[int, dict[str, int]]:
    """Usage the tenant's quotas record minus what its VMs not DELETED hold, per resource
    (signed), and the sum of the absolute differences."""
    live = [vm for vm in vms if vm.state != "DELETED"]
    holds = {
        "vms": len(live),
        "cpus": sum(vm.cpus for vm in live),
        "memory_mib": sum(vm.memory_mib for vm in live),
    }
    by_resource = {r: used.get(r, 0) - holds[r] for r in QUOTA_RESOURCES}
    return sum(abs(d) for d in by_resource.values()), by_resource


def events_missing(
    tasks: Iterable[str], states: Mapping[str, str | None], finished: Iterable[str]
) -> int:
    """Terminal tasks whose ``task.finished`` the subscriber never saw."""
    seen = set(finished)
    return sum(1 for t in tasks if states.get(t) in TERMINAL and t not in seen)
