"""The converter of a datacenter: runs its template conversions (V2V), a few at a time.

A child of the datacenter actor (``<datacenter>/converter``), so it runs wherever the datacenter
runs and is supervised with it. Conversions reach it as ``template.convert`` tasks written
PENDING (:func:`actors.conversion.request_conversion`: by the API on any node, which then has it
claim them at once, through the datacenter's port if it runs on another node
(:mod:`actors.routed_services`); or by :class:`Convert` from a deploy that needs a format its
template lacks); it claims them, then and every ``poll_interval`` (the recovery path), by a
compare-and-set to RUNNING, at most ``images.max_conversions`` at once (Abiquo's BPM ran one),
the others staying PENDING in the store until a slot frees: the queue survives a crash. The
tasks of the datacenter's templates (and the shared templates' tasks asked for here) are
claimed by it; a shared template's task asked for by the API goes to whichever converter
claims it first.

Each conversion runs in the background (:func:`actors.conversion.convert`: convert, compare,
store, journaled, each step within ``images.convert_deadline``). :class:`CancelConversion` ends
one CANCELLED with its scratch file removed. When the actor stops (the node stopping, the
datacenter moving, a crash), its conversions stop with their tasks RUNNING; the next converter of
the datacenter starts them again from the beginning, removing the scratch file the interrupted
run left first. Deploys waiting on a conversion wait on its task (:mod:`actors.template_disks`).
"""

from __future__ import annotations

import asyncio
from typing import Any, assert_never

from actors.conversion import (
    CONVERT,
    Convert,
    convert,
    end,
    free_orphans,
    request_conversion,
    scratch_of,
)
from actors.journal import Journal
from actors.paging import all_records
from actors.services import Services
from actors.template_disks import TemplateDisks
from cloudcore.errors import CloudcoreError, Conflict, NotFound, VersionConflict, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, Message
from cloudcore.store.records import StepState, Task, TaskState, Template

__all__ = [
    "CancelConversion",
    "Convert",
    "ConverterActor",
    "ConverterMessage",
    "PollConversions",
    "cancel_conversion",
]

_log = get_logger("actors.converter")


class CancelConversion(Message, frozen=True, kw_only=True):
    """End a conversion this converter runs, CANCELLED. Replies whether it ran here."""

    task_id: str


async def cancel_conversion(services: Services, task: Task) -> Task:
    """End the conversion ``task`` CANCELLED: PENDING, here (the template AVAILABLE again);
    RUNNING, by the converter of its datacenter, which must run on this node (Conflict
    otherwise, naming the node). Conflict if it has ended. Returns the task as it is now."""
    store = services.store
    if task.state is TaskState.PENDING:
        try:  # taken from the queue first, so no converter claims it meanwhile
            task = await store.update(
                Task, task.id, expected_version=task.version, state=TaskState.RUNNING
            )
        except VersionConflict:
            task = await store.get(Task, task.id)  # claimed by a converter meanwhile
        else:
            journal = Journal(store, task, services.waiters)
            fmt = str(task.data["format"])
            return await end(store, journal, fmt, None, TaskState.CANCELLED, "cancelled")
    if task.state is not TaskState.RUNNING:
        raise Conflict(f"task {task.id} has ended ({task.state}): nothing to cancel")
    disks = services.disks
    datacenter_id = str(task.data.get("datacenter_id"))
    converter = disks.converters.get(datacenter_id) if disks is not None else None
    if converter is None or not await converter.ask(CancelConversion(task_id=task.id)):
        raise Conflict(
            f"task {task.id} runs on node {task.data.get('node')}, not here: cancel it there"
        )
    return await services.waiters.wait(services.store, task.id, timeout=30.0)


class PollConversions(Message, frozen=True, kw_only=True):
    """Claim the conversions written PENDING, as slots allow (also sent by a timer)."""


class _Ended(Message, frozen=True, kw_only=True):
    task_id: str


ConverterMessage = Convert | CancelConversion | PollConversions | _Ended


class ConverterActor(Actor[ConverterMessage]):
    def __init__(self, services: Services, datacenter_id: str, poll_interval: float = 1.0):
        assert services.disks is not None, "a converter needs the image library"
        self.services = services
        self.disks: TemplateDisks = services.disks
        self.datacenter_id = datacenter_id
        self.poll_interval = poll_interval
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self.cancelled: set[str] = set()

    async def started(self) -> None:
        self.disks.converters[self.datacenter_id] = self.context.self_ref
        self.context.schedule_periodic("poll", self.poll_interval, PollConversions())
        try:
            await self._restart()
            await free_orphans(self.services.store, self.datacenter_id)
            await self._claim()
        except CloudcoreError as exc:  # the store is down: the timer tries again
            _log.warning("converter.load_failed", datacenter_id=self.datacenter_id, error=str(exc))

    async def stopping(self) -> None:
        if self.disks.converters.get(self.datacenter_id) == self.context.self_ref:
            del self.disks.converters[self.datacenter_id]
        await self._stop_jobs()

    async def before_restart(self, error: Exception) -> None:
        # The new instance starts them again: none may run twice.
        await self._stop_jobs()

    async def _stop_jobs(self) -> None:
        """Cancel the conversions running, left RUNNING: the datacenter's next converter (or
        this one restarted) starts them again."""
        jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        for task_id in self.jobs:
            self.services.runners.discard(task_id)
        self.jobs.clear()

    async def receive(self, message: ConverterMessage) -> Any:
        match message:
            case Convert(template_id=template_id, format=fmt):
                template = await self.services.store.get(Template, template_id)
                task = await request_conversion(
                    self.services.store, template, fmt, datacenter_id=self.datacenter_id, join=True
                )
                await self._claim()
                return task
            case CancelConversion(task_id=task_id):
                job = self.jobs.get(task_id)
                if job is None:
                    return False
                self.cancelled.add(task_id)
                job.cancel()
                return True
            case PollConversions():
                await self._claim()
            case _Ended(task_id=task_id):
                self.jobs.pop(task_id, None)
                self.cancelled.discard(task_id)
                self.services.runners.discard(task_id)
                await self._claim()
            case _:
                assert_never(message)
        return None

    def _ours(self, task: Task) -> bool:
        return task.kind == CONVERT and task.data.get("datacenter_id") in (
            self.datacenter_id,
            None,
        )

    async def _claim(self) -> None:
        """Claim PENDING conversions of this datacenter while slots are free."""
        free = self.disks.settings.max_conversions - len(self.jobs)
        if free <= 0:
            return
        store = self.services.store
        pending = [t async for t in all_records(store, Task, {"state": TaskState.PENDING})]
        for task in pending:
            if free <= 0:
                break
            if not self._ours(task):
                continue
            data = {**task.data, **self._runner(task)}
            try:
                task = await store.update(
                    Task, task.id, expected_version=task.version, state=TaskState.RUNNING, data=data
                )
            except VersionConflict:
                continue  # another converter took it
            self._start(task)
            free -= 1

    async def _restart(self) -> None:
        """The conversions of this datacenter found RUNNING: interrupted (a crash, a stop).
        Their interrupted steps are marked FAILED and they start again."""
        store = self.services.store
        running = [t async for t in all_records(store, Task, {"state": TaskState.RUNNING})]
        for task in running:
            ours = task.kind == CONVERT and task.data.get("datacenter_id") == self.datacenter_id
            if not ours or task.id in self.jobs:
                continue
            for step in await store.list_steps(task.id):
                if step.state is StepState.RUNNING:
                    await store.update_step(
                        task.id,
                        step.seq,
                        state=StepState.FAILED,
                        error="interrupted: the node stopped; the conversion starts again",
                    )
            try:
                task = await store.update(
                    Task,
                    task.id,
                    expected_version=task.version,
                    data={**task.data, **self._runner(task)},
                )
            except VersionConflict:
                continue
            _log.info("template.convert_restarted", task_id=task.id, datacenter=self.datacenter_id)
            self._start(task)

    def _runner(self, task: Task) -> dict[str, Any]:
        """What a claimed task records of who runs it (a shared template's task asked for by
        the API becomes this datacenter's: restarted by its converter after a crash), and how
        (its planned steps)."""
        compare = task.data.get("compare", self.disks.settings.compare_conversions)
        return {
            "node": self.disks.library.node,
            "datacenter_id": self.datacenter_id,
            "compare": compare,
        }

    def _start(self, task: Task) -> None:
        self.services.runners.add(task.id)
        self.jobs[task.id] = asyncio.create_task(self._run(task))

    async def _run(self, task: Task) -> None:
        store, disks = self.services.store, self.disks
        journal = Journal(store, task, self.services.waiters, steps_done=None)
        fmt = str(task.data["format"])
        try:
            template = await store.get(Template, str(task.data["template_id"]))
            repo = disks.library.repository(template.datacenter_id)
            try:
                sha = await convert(journal, disks.qemu, repo, template, fmt, disks.settings)
            except asyncio.CancelledError:
                if task.id not in self.cancelled:
                    raise  # the actor stops: RUNNING, started again by the next converter
                cancelled = self._end(journal, fmt, None, TaskState.CANCELLED, "cancelled")
                await asyncio.shield(cancelled)
                raise
            except Exception as exc:
                error = describe(exc)
                _log.warning("template.convert_failed", task_id=task.id, error=error)
                await self._end(journal, fmt, None, TaskState.FAILED, error)
            else:
                await self._end(journal, fmt, sha, TaskState.SUCCEEDED, None)
        except NotFound as exc:  # the template went
            await self._end(journal, fmt, None, TaskState.FAILED, describe(exc))
        finally:
            self.context.self_ref.tell(_Ended(task_id=task.id))

    async def _end(
        self, journal: Journal, fmt: str, sha: str | None, outcome: TaskState, error: str | None
    ) -> None:
        template_id = str(journal.task.data["template_id"])
        try:
            template = await self.services.store.get(Template, template_id)
        except NotFound:
            pass
        else:
            repo = self.disks.library.repository(template.datacenter_id)
            await asyncio.to_thread(scratch_of(repo, journal.task).unlink, missing_ok=True)
        await end(self.services.store, journal, fmt, sha, outcome, error)
