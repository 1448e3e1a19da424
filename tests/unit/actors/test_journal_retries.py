"""A journaled step retries what may succeed later, within its deadline, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.journal import Journal, StepTimeout
from actors.watchdog import Runners
from cloudcore.errors import BackendUnavailable, Conflict
from cloudcore.store import Store
from cloudcore.store.records import StepState
from cloudcore.store.sqlite import SqliteStore


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    store: Store = await SqliteStore.connect(tmp_path / "j.db")
    await store.upgrade()
    yield await Journal.begin(store, kind="vm.start", subject="vm/x", tenant_id=None)
    await store.close()


async def test_a_retryable_error_is_tried_again_and_the_step_succeeds(journal: Journal) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise BackendUnavailable("the database is restarting")
        return "done"

    assert await journal.step("start", flaky, deadline=10) == "done"
    assert calls == 3
    steps = await journal._store.list_steps(journal.task.id)
    assert [(s.name, s.state) for s in steps] == [("start", StepState.DONE)]


async def test_an_error_that_is_not_retryable_fails_the_step_at_once(journal: Journal) -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise Conflict("no")

    with pytest.raises(Conflict):
        await journal.step("start", refused, deadline=10)
    assert calls == 1


async def test_a_step_that_must_not_repeat_runs_once_even_on_a_retryable_error(
    journal: Journal,
) -> None:
    calls = 0

    async def lost_reply() -> None:  # a migration whose answer was lost may have happened
        nonlocal calls
        calls += 1
        raise BackendUnavailable("the connection dropped before the reply")

    with pytest.raises(BackendUnavailable):
        await journal.step("migrate", lost_reply, deadline=10, retry=False)
    assert calls == 1


async def test_retries_stop_at_the_deadline_with_the_last_error(journal: Journal) -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise BackendUnavailable("still down")

    with pytest.raises((BackendUnavailable, StepTimeout)):
        await journal.step("start", down, deadline=0.5)
    assert calls > 1
    steps = await journal._store.list_steps(journal.task.id)
    assert steps[-1].state is StepState.FAILED


def test_a_task_driven_by_two_actors_stays_driven_until_both_let_go() -> None:
    runners = Runners()
    runners.add("t1")
    runners.add("t1")
    runners.discard("t1")
    assert "t1" in runners
    runners.discard("t1")
    assert "t1" not in runners
    assert len(runners) == 0
