"""The chaos benchmark's counting (scripts/benchmarks/_chaos_tally.py): lost, duplicated,
quota drift and missing events from recorded observations."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts" / "benchmarks"))

from _chaos_tally import (
    Request,
    VMSeen,
    accepted_tasks,
    duplicated,
    events_missing,
    lost,
    quota_drift,
)


def _vm(name: str, state: str = "RUNNING", cpus: int = 1, memory_mib: int = 256) -> VMSeen:
    return VMSeen(id=f"id-{name}-{state}", name=name, state=state, cpus=cpus, memory_mib=memory_mib)


def test_lost_counts_accepted_tasks_not_terminal_or_unknown_to_the_store() -> None:
    requests = [
        Request(key="a", name="a", task_ids=["t1"]),
        Request(key="b", name="b", task_ids=["t2"]),
        Request(key="c", name="c", task_ids=["t3"]),
        Request(key="d", name="d"),  # never accepted: not lost, not counted
    ]
    states: dict[str, str | None] = {"t1": "SUCCEEDED", "t2": "RUNNING"}  # t3 unknown
    assert lost(requests, states) == 2


def test_retries_answered_with_other_task_ids_are_each_an_accepted_task() -> None:
    requests = [Request(key="a", name="a", task_ids=["t1", "t1", "t2"])]
    assert accepted_tasks(requests) == {"t1", "t2"}
    assert lost(requests, {"t1": "FAILED", "t2": "COMPENSATING"}) == 1


def test_duplicated_counts_requests_with_more_than_one_vm_whatever_their_state() -> None:
    requests = [Request(key=n, name=n, task_ids=[f"t-{n}"]) for n in ("a", "b", "c")]
    vms = [_vm("a"), _vm("b"), _vm("b", "DELETED"), _vm("c"), _vm("c"), _vm("c", "ERROR")]
    assert duplicated(requests, vms) == (2, 3)
    assert duplicated(requests, [_vm("a"), _vm("b")]) == (0, 0)


def test_quota_drift_is_usage_minus_what_vms_not_deleted_hold() -> None:
    vms = [_vm("a", cpus=2, memory_mib=512), _vm("b"), _vm("c", "DELETED", cpus=8)]
    exact = {"vms": 2, "cpus": 3, "memory_mib": 768}
    assert quota_drift(exact, vms) == (0, {"vms": 0, "cpus": 0, "memory_mib": 0})
    leaked = {"vms": 3, "cpus": 4, "memory_mib": 1024}
    assert quota_drift(leaked, vms) == (258, {"vms": 1, "cpus": 1, "memory_mib": 256})
    # Drift both ways does not cancel out.
    assert quota_drift({"vms": 1, "cpus": 4, "memory_mib": 768}, vms)[0] == 2


def test_events_missing_counts_terminal_tasks_without_their_task_finished() -> None:
    states: dict[str, str | None] = {"t1": "SUCCEEDED", "t2": "FAILED", "t3": "RUNNING"}
    tasks = ["t1", "t2", "t3", "t4"]
    assert events_missing(tasks, states, {"t1"}) == 1  # t2; t3 and t4 are not terminal
    assert events_missing(tasks, states, {"t1", "t2"}) == 0
