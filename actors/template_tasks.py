"""What the template tasks (imports from a URL, conversions) share: their progress written to the
journal without a commit per percent, the tasks a node left RUNNING, and the background jobs a
runner starts and cancels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from actors.journal import Journal
from actors.paging import all_records
from cloudcore.store import Store
from cloudcore.store.records import Task, TaskState

__all__ = ["Background", "Progress", "running_tasks"]

_REPORT_EVERY = 0.05  # progress is written to the store at most every 5 %
_REPORT_GAP = 0.5  # ... and at most twice a second (each write is a commit)


class Progress:
    """A task's progress into its running step: at most every 5 % and twice a second (each
    report is a commit), and always the first report of 100 %."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._fraction = 0.0
        self._at = 0.0

    async def __call__(self, fraction: float, **extra: Any) -> None:
        now = asyncio.get_running_loop().time()
        due = fraction - self._fraction >= _REPORT_EVERY and now - self._at >= _REPORT_GAP
        if due or (fraction >= 1.0 > self._fraction):
            self._fraction, self._at = fraction, now
            await self._journal.report({**extra, "percent": round(fraction * 100, 1)})


async def running_tasks(store: Store, kind: str) -> AsyncIterator[Task]:
    """The tasks of ``kind`` RUNNING now, in id order."""
    async for task in all_records(store, Task, {"state": TaskState.RUNNING}):
        if task.kind == kind:
            yield task


class Background:
    """The jobs a runner started in the background; :meth:`close` cancels them and waits."""

    def __init__(self) -> None:
        self._jobs: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        job = asyncio.create_task(work)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    async def close(self) -> None:
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
