"""The task watchdog: no task stays RUNNING with nothing driving it.

Every actor that drives a task (a deploy runner, a VM actor running an operation) registers the
task's id in :class:`Runners` while it does, and removes it when it stops driving it, whatever the
reason. The registry is in memory, so after a node restart it is empty and every task the store
still shows RUNNING counts as undriven, which is the truth. The datacenter actor checks
periodically (:func:`undriven`) for RUNNING tasks of its datacenter that no runner drives and
that have not moved for a grace period, and resumes or settles each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

from actors.paging import all_records
from cloudcore.runtime import Message
from cloudcore.store import Store
from cloudcore.store.records import Task, TaskState

__all__ = ["Resume", "Runners", "undriven"]


class Resume(Message, frozen=True, kw_only=True):
    """To the actor a task belongs to: task ``task_id`` is RUNNING and nothing drives it;
    resume it, or settle it from what the store and the hypervisor show. Replies None."""

    task_id: str


class Runners:
    """The ids of the tasks driven in this process. A task may be driven by two actors at once
    (a deploy's runner and, while it defines and starts, the VM's actor): each registration
    counts, and the task is driven until the last one is removed."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def add(self, task_id: str) -> None:
        self._ids[task_id] = self._ids.get(task_id, 0) + 1

    def discard(self, task_id: str) -> None:
        left = self._ids.get(task_id, 0) - 1
        if left > 0:
            self._ids[task_id] = left
        else:
            self._ids.pop(task_id, None)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._ids))

    def __len__(self) -> int:
        return len(self._ids)


async def undriven(
    store: Store, runners: Runners, grace: float, *, before: datetime | None = None
) -> AsyncIterator[Task]:
    """The RUNNING tasks no runner of this process drives and that have not changed for
    ``grace`` seconds (a task is written before its runner registers it), or since ``before``
    if given (a time before which no runner of the caller's could have written them)."""
    before = before or datetime.now(UTC) - timedelta(seconds=grace)
    async for task in all_records(store, Task, {"state": TaskState.RUNNING}):
        if task.id not in runners and task.updated_at <= before:
            yield task
