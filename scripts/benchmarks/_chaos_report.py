"""The chaos benchmark's one JSON object, from what a run recorded. A figure the run never got
to measure (it was stopped first) is null and its goal false: nothing is reported as met
that was not seen."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from _chaos_tally import (
    TERMINAL,
    accepted_tasks,
    duplicated,
    events_missing,
    lost,
    quota_drift,
)

if TYPE_CHECKING:
    from _chaos_run import Run

__all__ = ["compose"]


def _goals(figures: dict[str, Any], goal_recovery_s: float) -> dict[str, bool]:
    def zero(name: str) -> bool:
        return figures[name] == 0

    recovery = figures["recovery_s"]
    return {
        "lost == 0": zero("lost"),
        "stuck_after_60s == 0": zero("stuck_after_60s"),
        "duplicated == 0": zero("duplicated"),
        "quota_drift == 0": zero("quota_drift"),
        "events_missing == 0": zero("events_missing"),
        f"recovery_s <= {goal_recovery_s:g}": recovery is not None
        and not figures["recovery_capped"]
        and recovery <= goal_recovery_s,
    }


def compose(run: Run, error: str | None) -> dict[str, Any]:
    from _chaos_run import GOAL_RECOVERY_S

    args, requests = run.args, run.requests
    tasks = accepted_tasks(requests)
    watched = run.load_end is not None and run.recovery_s is not None
    sub = run.subscriber
    finals = Counter(r.final or "no answer" for r in requests[: run.started])
    figures: dict[str, Any] = {
        "accepted": sum(1 for r in requests if r.task_ids),
        "lost": lost(requests, run.states) if watched else None,
        "stuck_after_60s": run.stuck,
        "duplicated": None,
        "quota_drift": None,
        "events_missing": None,
        "recovery_s": None if run.recovery_s is None else round(run.recovery_s, 1),
        "recovery_capped": run.recovery_capped,
    }
    details: dict[str, Any] = {}
    if run.vms is not None:
        figures["duplicated"], details["duplicate_vms_extra"] = duplicated(requests, run.vms)
        names = {r.name for r in requests if r.task_ids}
        details["vms_of_unaccepted_requests"] = sum(
            1 for vm in run.vms if vm.name not in names and vm.name.startswith("chaos-")
        )
        details["vm_states"] = dict(Counter(vm.state for vm in run.vms))
    if run.vms is not None and run.used is not None:
        figures["quota_drift"], details["quota_drift_by_resource"] = quota_drift(run.used, run.vms)
    if sub is not None and watched:
        figures["events_missing"] = events_missing(tasks, run.states, sub.finished)
    if run.in_history is not None:
        # Not seen on the stream but in the bus's history: published, then not delivered.
        details["events_missing_from_history"] = events_missing(tasks, run.states, run.in_history)
    goals = _goals(figures, GOAL_RECOVERY_S)
    return {
        "suite": "chaos",
        "completed": error is None,
        "error": error,
        "store": "postgres (private cluster)",
        "events": "redis (private server)",
        "deploys": args.deploys,
        "window": args.window,
        "kills": args.kills,
        "outage_s": args.outage_s,
        "seed": args.seed,
        "hosts": args.hosts,
        **figures,
        "goals": goals,
        "goals_met": all(goals.values()),
        "requests_started": run.started,
        "request_finals": dict(finals),
        "attempt_outcomes": dict(Counter(a for r in requests for a in r.attempts)),
        "requests_with_several_task_ids": sum(1 for r in requests if len(set(r.task_ids)) > 1),
        "task_states": dict(Counter(run.states.get(t, "NOT FOUND") for t in tasks)),
        "tasks_terminal": sum(1 for t in tasks if run.states.get(t) in TERMINAL),
        **details,
        "event_stream": None
        if sub is None
        else {
            "finished_seen": len(sub.finished),
            "deliveries": sub.deliveries,
            "duplicate_deliveries": sub.duplicate_deliveries,
            "connects": sub.connects,
            "refusals": dict(sub.refusals),
        },
        "faults": run.faults,
        "node_starts": None if run.node is None else run.node.starts,
        "node_unplanned_exits": run.unplanned_exits,
        "node_log_warnings_and_errors": dict(run.log_errors.most_common(12)),
        "load_s": None if run.load_end is None else round(run.load_end - run.t0, 1),
        "elapsed_s": round(time.monotonic() - run.t0, 1),
    }
