"""The transactional outbox: events are written with the change that causes them, both or
neither, and the relay publishes them in order, once per id after de-duplication."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import pytest

import cloudcore.store._outbox as outbox_sql
from cloudcore.errors import AlreadyExists, BackendUnavailable, NotFound, VersionConflict
from cloudcore.events.base import Event
from cloudcore.events.dedup import SeenIds, deduplicated
from cloudcore.events.local import LocalEventBus
from cloudcore.events.relay import OutboxRelay
from cloudcore.store.base import Store
from cloudcore.store.records import VM, OutboxEvent, StepState, Task, VMState, new_id
from tests.contract.store.factory import Factory


def _event(subject: str, n: int = 0) -> OutboxEvent:
    return OutboxEvent(type="vm.state_changed", subject=subject, tenant_id="t", data={"n": n})


async def _vm(make: Factory) -> VM:
    return await make.vm(await make.tenant(), await make.datacenter())


async def test_an_update_writes_its_events_in_its_transaction_each_with_a_new_id(
    store: Store, make: Factory
) -> None:
    vm = await _vm(make)
    events = [_event(f"vm/{vm.id}", 1), _event(f"vm/{vm.id}", 2)]

    updated = await store.update(
        VM, vm.id, expected_version=vm.version, events=events, state=VMState.SCHEDULING
    )

    assert updated.state is VMState.SCHEDULING
    stored = await store.read_outbox()
    assert [(e.subject, e.data) for e in stored] == [
        (f"vm/{vm.id}", {"n": 1}),
        (f"vm/{vm.id}", {"n": 2}),
    ]
    assert len({e.id for e in stored}) == 2 and all(e.id.startswith("evt-") for e in stored)
    assert stored[0].seq < stored[1].seq and stored[0].time.tzinfo is not None
    await store.remove_from_outbox([e.seq for e in stored])
    assert await store.read_outbox() == []


async def test_a_failed_compare_and_set_writes_no_event(store: Store, make: Factory) -> None:
    vm = await _vm(make)
    with pytest.raises(VersionConflict):
        await store.update(VM, vm.id, expected_version=7, events=[_event("vm/a")], name="x")
    with pytest.raises(NotFound):
        await store.update(VM, "nope", expected_version=1, events=[_event("vm/b")], name="x")
    with pytest.raises(NotFound):
        await store.update_step("nope", 1, state=StepState.DONE, events=[_event("task/c")])
    assert await store.read_outbox() == []


async def test_a_change_and_its_events_are_both_written_or_neither(
    store: Store, make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event's insert fails inside the write (a duplicate id, as the database sees it):
    the change is rolled back with it."""
    vm = await _vm(make)
    task = await make.task()
    step = await store.append_step(task.id, "define")
    monkeypatch.setattr(outbox_sql, "new_id", lambda prefix="": "evt-the-same")
    first = await store.write_events([_event("vm/first")])

    with pytest.raises(AlreadyExists):
        await store.update(
            VM, vm.id, expected_version=vm.version, events=[_event("vm/x")], name="renamed"
        )
    with pytest.raises(AlreadyExists):
        await store.create(
            Task(id="task-never", kind="k", subject="vm/y"), events=[_event("task/never")]
        )
    with pytest.raises(AlreadyExists):
        await store.update_step(task.id, step.seq, state=StepState.DONE, events=[_event("t/z")])

    assert (await store.get(VM, vm.id)) == vm
    with pytest.raises(NotFound):
        await store.get(Task, "task-never")
    assert (await store.list_steps(task.id))[0].state is StepState.PENDING
    assert [e.id for e in await store.read_outbox()] == [e.id for e in first]


async def test_concurrent_updates_write_the_events_of_those_that_won_only(
    store: Store, make: Factory
) -> None:
    """Concurrent updates share statements on PostgreSQL (group commit): each keeps its own
    outcome and its own events."""
    tenant, dc = await make.tenant(), await make.datacenter()
    vms = [await make.vm(tenant, dc) for _ in range(20)]

    async def update(vm: VM, version: int) -> VM | None:
        try:
            return await store.update(
                VM, vm.id, expected_version=version, events=[_event(f"vm/{vm.id}")], name="n"
            )
        except VersionConflict:
            return None

    results = await asyncio.gather(
        *(update(vm, vm.version if i % 2 == 0 else 99) for i, vm in enumerate(vms))
    )

    won = {r.id for r in results if r is not None}
    assert len(won) == 10
    assert sorted(e.subject for e in await store.read_outbox()) == sorted(
        f"vm/{vm_id}" for vm_id in won
    )


async def test_create_and_step_updates_carry_their_events(store: Store, make: Factory) -> None:
    task = await store.create(
        Task(id=new_id("task-"), kind="k", subject="vm/a"), events=[_event("task/created")]
    )
    step = await store.append_step(task.id, "go")
    done = await store.update_step(
        task.id, step.seq, state=StepState.RUNNING, events=[_event("task/step")]
    )
    assert done.state is StepState.RUNNING
    assert [e.subject for e in await store.read_outbox()] == ["task/created", "task/step"]


async def test_a_new_step_writes_its_events_each_given_its_number(
    store: Store, make: Factory
) -> None:
    task = await make.task()
    first = await store.append_step(task.id, "a", events=[_event("task/a", 1)])
    second = await store.append_step(
        task.id, "b", state=StepState.RUNNING, events=[_event("task/b", 2), _event("task/b", 3)]
    )

    assert (first.seq, first.state, second.seq, second.state) == (
        1,
        StepState.PENDING,
        2,
        StepState.RUNNING,
    )
    assert [(e.subject, e.data) for e in await store.read_outbox()] == [
        ("task/a", {"n": 1, "seq": 1}),
        ("task/b", {"n": 2, "seq": 2}),
        ("task/b", {"n": 3, "seq": 2}),
    ]
    with pytest.raises(NotFound):
        await store.append_step("nope", "c", events=[_event("task/c")])
    assert len(await store.read_outbox()) == 3


async def test_a_step_and_its_events_are_both_written_or_neither(
    store: Store, make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await make.task()
    monkeypatch.setattr(outbox_sql, "new_id", lambda prefix="": "evt-the-same")
    first = await store.write_events([_event("vm/first")])

    with pytest.raises(AlreadyExists):
        await store.append_step(task.id, "a", events=[_event("task/a")])

    assert await store.list_steps(task.id) == []
    assert (await store.get(Task, task.id)).step_count == 0
    assert [e.id for e in await store.read_outbox()] == [e.id for e in first]


async def test_concurrent_step_writes_each_keep_their_outcome_and_events(
    store: Store, make: Factory
) -> None:
    """Concurrent journal writes share statements on PostgreSQL (group commit): each new step
    is numbered by its own task, a write of an unknown task or step fails alone and writes no
    event, and two steps of one task never clash."""
    tasks = [await make.task() for _ in range(12)]

    async def append(task_id: str, n: int) -> int | None:
        try:
            step = await store.append_step(task_id, f"s{n}", events=[_event(f"task/{task_id}", n)])
        except NotFound:
            return None
        return step.seq

    targets = [t.id for t in tasks] * 2 + ["nope-1", "nope-2"]
    seqs = await asyncio.gather(*(append(task_id, n) for n, task_id in enumerate(targets)))
    assert seqs[-2:] == [None, None]
    for task in tasks:
        steps = await store.list_steps(task.id)
        assert [s.seq for s in steps] == [1, 2]
    appended = await store.read_outbox(limit=100)
    assert sorted(e.subject for e in appended) == sorted(f"task/{t}" for t in targets[:-2])
    assert all(e.data["seq"] in (1, 2) for e in appended)
    await store.remove_from_outbox([e.seq for e in appended])

    async def outcome(task_id: str, seq: int) -> bool:
        try:
            await store.update_step(
                task_id, seq, state=StepState.DONE, events=[_event(f"task/{task_id}/{seq}")]
            )
        except NotFound:
            return False
        return True

    keys = [(t.id, seq) for t in tasks for seq in (1, 2, 3)]
    done = await asyncio.gather(*(outcome(task_id, seq) for task_id, seq in keys))
    assert done == [seq != 3 for _, seq in keys]
    assert sorted(e.subject for e in await store.read_outbox(limit=100)) == sorted(
        f"task/{task_id}/{seq}" for task_id, seq in keys if seq != 3
    )
    for task in tasks:
        assert {s.state for s in await store.list_steps(task.id)} == {StepState.DONE}


class _FlakyBus(LocalEventBus):
    """Refuses the first ``down`` publishes, as a bus in an outage does."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    async def publish(
        self,
        type: str,
        subject: str,
        *,
        tenant: str | None = None,
        data: Mapping[str, Any] | None = None,
        id: str | None = None,
        time: datetime | None = None,
    ) -> Event:
        if self.down > 0:
            self.down -= 1
            raise BackendUnavailable("the bus is down")
        return await super().publish(type, subject, tenant=tenant, data=data, id=id, time=time)


async def test_the_relay_delivers_in_order_once_per_id_through_an_outage_and_a_crash(
    store: Store, make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm = await _vm(make)
    # Written before any relay runs (as if the last one crashed): sent once one starts.
    await store.write_events([_event(f"vm/{vm.id}", n) for n in range(5)])
    bus = _FlakyBus(down=8)  # two whole batches: an outage fails a batch's round trip
    received: list[Event] = []
    copies = 0
    all_in = asyncio.Event()
    total = 5 + 30

    async def consume() -> None:
        nonlocal copies
        seen = SeenIds()
        async for event in bus.subscribe(after="0"):
            if not seen.first_time(event.id):
                copies += 1
                continue
            received.append(event)
            if len(received) == total:
                all_in.set()

    # A crash between publishing and removing: the first removal is lost, its rows go again.
    remove = store.remove_from_outbox
    failed_once = False

    async def crash_once(seqs: Any) -> None:
        nonlocal failed_once
        if not failed_once and seqs:
            failed_once = True
            raise BackendUnavailable("crashed before removing")
        await remove(seqs)

    monkeypatch.setattr(store, "remove_from_outbox", crash_once)
    consumer = asyncio.create_task(consume())
    relay = OutboxRelay(store, bus, batch=4, poll=30.0)
    async with relay:
        for n in range(5, total):
            current = await store.get(VM, vm.id)
            await store.update(
                VM,
                vm.id,
                expected_version=current.version,
                events=[_event(f"vm/{vm.id}", n)],
                name=f"n{n}",
            )
        async with asyncio.timeout(20):  # a nudge per commit: far less than the 30 s poll
            await all_in.wait()
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)

    assert [e.data["n"] for e in received] == list(range(total))
    assert len({e.id for e in received}) == total
    assert copies > 0 and failed_once  # the crash did send copies, and they were skipped
    assert await store.read_outbox() == []


async def test_deduplicated_passes_each_id_once_and_remembers_a_bounded_window() -> None:
    bus = LocalEventBus()
    for n in (1, 2, 1, 3, 3, 2):
        await bus.publish("x.y", "s/1", id=f"evt-{n}")

    async def replay() -> AsyncIterator[Event]:
        for event in await bus.read(after="0"):
            yield event

    seen = SeenIds(capacity=2)
    got = [e.id async for e in deduplicated(replay(), seen)]

    # evt-2 had left the window of two (1 was seen again since): memory stays bounded
    assert got == ["evt-1", "evt-2", "evt-3", "evt-2"]
    assert len(seen) == 2
