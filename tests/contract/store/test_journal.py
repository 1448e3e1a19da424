"""The task journal, the audit trail and IP allocations."""

from __future__ import annotations

import pytest

from cloudcore.errors import AlreadyExists, InvalidRecord, NotFound
from cloudcore.store.base import Store
from cloudcore.store.records import StepState, Task
from tests.contract.store.factory import Factory


async def test_steps_are_journaled_in_order_and_their_outcome_recorded(
    store: Store, make: Factory
) -> None:
    task = await make.task()

    first = await store.append_step(task.id, "claim-capacity", data={"host": "h1"})
    second = await store.append_step(task.id, "define-domain")
    done = await store.update_step(task.id, first.seq, state=StepState.DONE)
    failed = await store.update_step(
        task.id, second.seq, state=StepState.FAILED, error="boom", data={"try": 2}
    )

    assert (first.seq, second.seq) == (1, 2)
    assert (done.state, done.data) == (StepState.DONE, {"host": "h1"})
    assert (failed.error, failed.data) == ("boom", {"try": 2})
    assert await store.list_steps(task.id) == [done, failed]
    stored = await store.get(Task, task.id)
    assert (stored.step_count, stored.version) == (2, 1)


async def test_steps_of_an_unknown_task_or_step_are_not_found(store: Store, make: Factory) -> None:
    task = await make.task()
    with pytest.raises(NotFound):
        await store.append_step("nope", "x")
    with pytest.raises(NotFound):
        await store.update_step(task.id, 1, state=StepState.DONE)
    assert await store.list_steps(task.id) == []


async def test_deleting_a_task_deletes_its_journal(store: Store, make: Factory) -> None:
    task = await make.task()
    await store.append_step(task.id, "x")
    await store.delete(Task, task.id)
    assert await store.list_steps(task.id) == []


async def test_audit_events_keep_their_order_and_filter_by_subject(store: Store) -> None:
    recorded = [
        await store.record_event("vm.created", f"vm/{i % 2}", tenant_id="t1", data={"i": i})
        for i in range(5)
    ]

    assert [e.id for e in recorded] == sorted(e.id for e in recorded)
    page = await store.list_events(subject="vm/0", limit=2)
    assert [e.data["i"] for e in page.items] == [0, 2]
    rest = await store.list_events(subject="vm/0", after=page.next_cursor)
    assert [e.data["i"] for e in rest.items] == [4]
    assert rest.next_cursor is None
    assert len((await store.list_events(tenant_id="t1")).items) == 5


async def test_an_audit_event_needs_a_type_and_subject(store: Store) -> None:
    with pytest.raises(InvalidRecord):
        await store.record_event("", "vm/1")


async def test_an_address_is_held_once_until_released(store: Store, make: Factory) -> None:
    net = await make.network(await make.datacenter())

    held = await store.allocate_ip(net.id, "10.0.0.5", vm_id="vm-1")
    with pytest.raises(AlreadyExists):
        await store.allocate_ip(net.id, "10.0.0.5", vm_id="vm-2")
    await store.allocate_ip(net.id, "10.0.0.6")

    assert [a.address for a in await store.list_ips(net.id)] == ["10.0.0.5", "10.0.0.6"]
    assert held.vm_id == "vm-1"
    await store.release_ip(net.id, "10.0.0.5")
    with pytest.raises(NotFound):
        await store.release_ip(net.id, "10.0.0.5")
    with pytest.raises(InvalidRecord):
        await store.allocate_ip("no-such-net", "10.0.0.1")
