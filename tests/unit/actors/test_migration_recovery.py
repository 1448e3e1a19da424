"""Where a migration left its VM: decided from both hypervisors, never on two hosts."""

from __future__ import annotations

import itertools

import pytest

from actors.migration import MigrationPlan
from actors.migration_recovery import Where, where
from cloudcore.store.records import Task
from hypervisor_drivers.types import GuestPower

_SEEN = [None, *GuestPower]


@pytest.mark.parametrize(("source", "target"), list(itertools.product(_SEEN, _SEEN)))
def test_a_vm_is_settled_on_the_one_host_that_has_it_and_undecided_on_both(
    source: GuestPower | None, target: GuestPower | None
) -> None:
    place = where((source, target))
    if source is not None and target is not None:
        assert place is Where.BOTH  # a hypervisor still migrates it: no decision
    elif source is not None:
        assert place is Where.SOURCE
    elif target is not None:
        assert place is Where.TARGET
    else:
        assert place is Where.NOWHERE


def test_the_plan_and_its_hold_are_read_back_from_the_task() -> None:
    plan = MigrationPlan(source_id="h1", target_id="h2", live=True, cpus=2, memory_mib=512)
    task = Task(
        id="t", kind="vm.migrate", subject="vm/x", data={"host_id": None, **plan.task_data()}
    )
    assert plan.task_data()["hold"] == {"host": "h2", "cpus": 2, "memory_mib": 512}
    assert MigrationPlan.of_task(task) == plan
    assert MigrationPlan.of_task(Task(id="t", kind="vm.migrate", subject="vm/x")) is None
    assert (
        MigrationPlan.of_task(Task(id="t", kind="vm.stop", subject="vm/x", data=task.data)) is None
    )
