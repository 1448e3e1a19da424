"""Task journals: every step of a long operation is written to the store before it runs.

A restarted orchestrator finds the steps of unfinished tasks in the store and resumes or
compensates them. Every step has a deadline; a step past it fails with StepTimeout. Within it, an
error the action raises that is marked ``retryable`` (a backend down, a full mailbox) runs the
action again after a backoff; a timeout inside the action (an ask with no reply) is reported with
its own figure, not as the step's deadline. Progress is announced by ``task.step`` and
``task.finished`` events, each written in the same transaction as the step's or the task's change
(the store's outbox), so none is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from cloudcore.errors import CloudcoreError, VersionConflict, describe
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import OutboxEvent, StepState, Task, TaskState, new_id

__all__ = [
    "Journal",
    "StepTimeout",
    "TaskWaiters",
    "backoff",
    "planned_steps",
    "progress_of",
    "retryable",
]

T = TypeVar("T")
_log = get_logger("actors.journal")
#: Backoff between two tries of a step whose action failed with a retryable error (seconds).
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 2.0


class StepTimeout(CloudcoreError, TimeoutError):
    """A task step did not finish before its deadline."""


class TaskWaiters:
    """In-process futures for "tell me when task X ends", resolved by Journal.finish."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[Task]]] = {}

    async def wait(self, store: Store, task_id: str, timeout: float) -> Task:
        """The task once it is SUCCEEDED, FAILED, COMPENSATED or CANCELLED."""
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(task_id, []).append(future)
        try:
            task = await store.get(Task, task_id)
            if task.state in FINAL:
                return task
            async with asyncio.timeout(timeout):
                return await future
        finally:
            waiting = self._waiting.get(task_id)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiting[task_id]

    def waiting(self, task_id: str) -> bool:
        """Whether someone in this process waits for the task."""
        return task_id in self._waiting

    def resolve(self, task: Task) -> None:
        for future in self._waiting.pop(task.id, []):
            if not future.done():
                future.set_result(task)


FINAL = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.COMPENSATED, TaskState.CANCELLED}
)


class Journal:
    """The journal of one task. Not shared between coroutines."""

    def __init__(
        self,
        store: Store,
        task: Task,
        waiters: TaskWaiters | None = None,
        *,
        steps_done: int | None = None,
    ) -> None:
        """``steps_done``: how many of the task's steps are DONE, if the caller knows (else
        counted from the store at the first step, unless the task has none yet)."""
        self._store = store
        self.task = task
        self._waiters = waiters
        self._steps_done = 0 if steps_done is None and task.step_count == 0 else steps_done
        self._running: tuple[int, str, dict[str, Any]] | None = None  # seq, name, data

    @classmethod
    async def begin(
        cls,
        store: Store,
        *,
        kind: str,
        subject: str,
        tenant_id: str | None,
        data: Mapping[str, Any] | None = None,
        waiters: TaskWaiters | None = None,
    ) -> Journal:
        """Create the task, RUNNING."""
        task = await store.create(
            Task(
                id=new_id("task-"),
                tenant_id=tenant_id,
                kind=kind,
                subject=subject,
                state=TaskState.RUNNING,
                data=dict(data or {}),
            )
        )
        return cls(store, task, waiters)

    async def step(
        self,
        name: str,
        action: Callable[[], Awaitable[T]],
        *,
        deadline: float,
        data: Mapping[str, Any] | None = None,
        retry: bool = True,
    ) -> T:
        """Journal step ``name``, run ``action`` within ``deadline`` seconds, record the outcome.

        With ``retry``, ``action`` runs again after a backoff while it raises a retryable error
        and the deadline allows another try, so it must be idempotent; an action that is not
        (a migration: a second try after a lost reply would find the VM moved) passes False
        and runs once. Raises StepTimeout past the deadline, or what ``action`` raised last.
        """
        due = datetime.now(UTC) + timedelta(seconds=deadline)
        running = self._step_event(None, name, StepState.RUNNING, None, await self.steps_done())
        step = await self._store.append_step(
            self.task.id, name, deadline=due, data=data, state=StepState.RUNNING, events=[running]
        )
        self.task = msgspec.structs.replace(self.task, step_count=step.seq)
        self._running = (step.seq, name, dict(data or {}))
        scope = asyncio.timeout(deadline)
        try:
            async with scope:
                if retry:
                    result = await _with_retries(name, self.task.id, action, deadline)
                else:
                    result = await action()
        except TimeoutError as exc:
            if not scope.expired():  # a timeout of the action's own, e.g. an ask: its figure
                await self._record_step(step.seq, name, StepState.FAILED, describe(exc))
                raise
            error = f"step {name} passed its deadline of {deadline:g} s"
            await self._record_step(step.seq, name, StepState.FAILED, error)
            raise StepTimeout(error) from exc
        except Exception as exc:
            await self._record_step(step.seq, name, StepState.FAILED, describe(exc))
            raise
        finally:
            self._running = None
        await self._record_step(step.seq, name, StepState.DONE)
        return result

    async def report(self, progress: Mapping[str, Any]) -> None:
        """Record how far the running step has come (``progress`` joins the step's data), with
        a ``task.step`` event carrying it. No-op when no step runs."""
        if self._running is None:
            return
        seq, name, data = self._running
        done = self._steps_done or 0
        event = self._event(
            "task.step",
            {
                "seq": seq,
                "step": name,
                "state": str(StepState.RUNNING),
                "error": None,
                "progress": _fraction(done, len(planned_steps(self.task))),
                **progress,
            },
        )
        await self._store.update_step(
            self.task.id, seq, state=StepState.RUNNING, data={**data, **progress}, events=[event]
        )

    @property
    def known_steps_done(self) -> int | None:
        """How many steps are DONE, if known without reading the store."""
        return self._steps_done

    async def steps_done(self) -> int:
        """How many of the task's steps are DONE (read from the store once, for a resumed
        task whose journal was not told)."""
        if self._steps_done is None:
            steps = await self._store.list_steps(self.task.id)
            self._steps_done = sum(1 for s in steps if s.state is StepState.DONE)
        return self._steps_done

    async def _record_step(
        self, seq: int, name: str, state: StepState, error: str | None = None
    ) -> None:
        """Write the step's state with its ``task.step`` event, in one transaction."""
        done = await self.steps_done() + (state is StepState.DONE)
        event = self._step_event(seq, name, state, error, done)
        await self._store.update_step(self.task.id, seq, state=state, error=error, events=[event])
        self._steps_done = done

    def _step_event(
        self, seq: int | None, name: str, state: StepState, error: str | None, done: int
    ) -> OutboxEvent:
        """The ``task.step`` event; ``seq`` None: the store numbers it (a new step)."""
        data: dict[str, Any] = {} if seq is None else {"seq": seq}
        data.update(
            step=name,
            state=str(state),
            error=error,
            progress=_fraction(done, len(planned_steps(self.task))),
        )
        return self._event("task.step", data)

    def _event(self, type: str, data: dict[str, Any]) -> OutboxEvent:
        task = self.task
        return OutboxEvent(
            type=type,
            subject=f"task/{task.id}",
            tenant_id=task.tenant_id,
            data={"task_id": task.id, "kind": task.kind, "subject": task.subject, **data},
        )

    @staticmethod
    def new_task(
        *,
        kind: str,
        subject: str,
        tenant_id: str | None,
        data: Mapping[str, Any] | None = None,
    ) -> Task:
        """A task RUNNING, not stored yet: the caller writes it in the same transaction as the
        change it begins (``Store.update_charged``'s ``create``), then journals it with
        ``Journal(store, stored)``."""
        return Task(
            id=new_id("task-"),
            tenant_id=tenant_id,
            kind=kind,
            subject=subject,
            state=TaskState.RUNNING,
            data=dict(data or {}),
        )

    def ending(self, state: TaskState, error: str | None = None) -> tuple[Task, OutboxEvent]:
        """The task as it ends and its ``task.finished`` event, for a caller that writes both
        in the same transaction as the change the end comes with (``Store.update_charged``'s
        ``end_task``), then calls :meth:`ended`."""
        finished = self._event(
            "task.finished", {"state": str(state), "error": error, "progress": 1.0}
        )
        return msgspec.structs.replace(self.task, state=state, error=error), finished

    async def finish(self, state: TaskState, error: str | None = None) -> Task:
        """Record the task's end (compare-and-set, re-read once if an operator changed it)."""
        _, finished = self.ending(state, error)
        for _ in range(3):
            try:
                self.task = await self._store.update(
                    Task,
                    self.task.id,
                    expected_version=self.task.version,
                    events=[finished],
                    state=state,
                    error=error,
                )
                break
            except VersionConflict:
                # Another writer changed it; if it ended it, that writer wrote its event.
                self.task = await self._store.get(Task, self.task.id)
                if self.task.state in FINAL:
                    break
        return self.ended(self.task)

    def ended(self, task: Task) -> Task:
        """The task has ended as stored (``task``): wake who waits for it, say so."""
        self.task = task
        if self._waiters is not None:
            self._waiters.resolve(task)
        _log.info(
            "task.finished",
            task_id=task.id,
            kind=task.kind,
            state=str(task.state),
            error=task.error,
        )
        return task


def planned_steps(task: Task) -> list[str]:
    """The steps a task takes when all goes well (compensation may add more)."""
    if task.kind == "vm.deploy":
        return (
            ["schedule", "define", "start"]
            if task.data.get("start", True)
            else [
                "schedule",
                "define",
            ]
        )
    if task.kind == "template.convert":
        compare = task.data.get("compare", True)
        return ["convert", "compare", "store"] if compare else ["convert", "store"]
    if task.kind == "template.import":
        return ["download", "accept"]
    if task.kind == "host.maintenance":
        return ["drain"]
    if task.kind in _VOLUME_STEPS:
        return _VOLUME_STEPS[task.kind]
    return [task.kind.removeprefix("vm.").removeprefix("volume.")]


#: Volume tasks of more than one step (``actors.volume_work``).
_VOLUME_STEPS = {"volume.attach": ["export", "attach"], "volume.detach": ["detach", "unexport"]}


def progress_of(task: Task, steps_done: float) -> float:
    """How far a task has come, 0 to 1: 1 once it has ended, whatever its outcome."""
    if task.state in FINAL:
        return 1.0
    return _fraction(steps_done, len(planned_steps(task)))


def _fraction(done: float, planned: int) -> float:
    # A task that has not ended never shows 100 %, even when compensation adds steps.
    return round(min(done / max(planned, 1), 0.99), 3)


def retryable(error: BaseException) -> bool:
    """Whether the same call may succeed if tried again later."""
    return isinstance(error, CloudcoreError) and error.retryable


def backoff(attempt: int) -> float:
    """The delay before try ``attempt + 1`` (``attempt`` >= 1): doubling, capped."""
    return float(min(FIRST_BACKOFF * 2 ** (attempt - 1), MAX_BACKOFF))


async def _with_retries(
    name: str, task_id: str, action: Callable[[], Awaitable[T]], deadline: float
) -> T:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    attempt = 0
    while True:
        try:
            return await action()
        except Exception as exc:
            attempt += 1
            delay = backoff(attempt)
            if not retryable(exc) or loop.time() + delay >= end:
                raise
            _log.info(
                "step.retry",
                task_id=task_id,
                step=name,
                attempt=attempt,
                delay=delay,
                error=describe(exc),
            )
            await asyncio.sleep(delay)
