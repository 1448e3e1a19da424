"""Template conversions (V2V): ``qemu-img convert`` as journaled tasks, a few at a time.

A conversion is a task of three journaled steps: ``convert`` (qemu-img convert -p into the
repository's scratch directory, its progress reported into the step), ``compare`` (qemu-img
compare of the result against the source: the same guest-visible bytes or the task fails) and
``store`` (hashed, fsynced, renamed into the library under its sha256). The template is
CONVERTING meanwhile and AVAILABLE afterwards whatever the outcome; on success its ``formats``
names the new file. A failure, a deadline or a cancellation removes the scratch file; a crash
leaves it in the node's ``tmp/``, which is emptied when the node next opens the repository, and
:meth:`ImageConverter.recover` fails the task it left RUNNING: never a half file in the library.

At most ``images.max_conversions`` run at once on a node (Abiquo's BPM ran one); more wait for a
slot, their task RUNNING without steps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.journal import Journal, TaskWaiters
from actors.template_lifecycle import TemplateOperation, transition
from cloudcore.config import ImagesSettings
from cloudcore.errors import (
    AlreadyExists,
    DriverError,
    InvalidRequest,
    NotFound,
    VersionConflict,
)
from cloudcore.images import FORMATS, ImageLibrary, QemuImg, sha256_of
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import OutboxEvent, Task, TaskState, Template, TemplateState

__all__ = ["ImageConverter"]

_log = get_logger("actors.converter")
_REPORT_EVERY = 0.05  # progress is written to the store at most every 5 %
_REPORT_GAP = 0.5  # ... and at most twice a second (each write is a commit)


class ImageConverter:
    """Starts conversions and runs them in the background, bounded by a semaphore."""

    def __init__(
        self,
        store: Store,
        library: ImageLibrary,
        qemu: QemuImg,
        settings: ImagesSettings,
        waiters: TaskWaiters | None = None,
    ) -> None:
        self._store = store
        self._library = library
        self._qemu = qemu
        self._settings = settings
        self._waiters = waiters
        self._slots = asyncio.Semaphore(settings.max_conversions)
        self._running: set[asyncio.Task[None]] = set()

    async def start(self, template: Template, fmt: str) -> Task:
        """Begin converting ``template`` to ``fmt``; the task, RUNNING. IllegalTransition if
        the template is not AVAILABLE, AlreadyExists if it has ``fmt`` already."""
        if fmt not in FORMATS:
            raise InvalidRequest(f"format: {fmt!r} is not one of {', '.join(sorted(FORMATS))}")
        step = transition(TemplateOperation.CONVERT, template.state, template.id)
        if fmt in template.formats:
            raise AlreadyExists(f"template {template.id} is available in {fmt} already")
        template = await self._store.update(
            Template,
            template.id,
            expected_version=template.version,
            events=[_event(template, step.transient)],
            state=step.transient,
        )
        journal = await Journal.begin(
            self._store,
            kind="template.convert",
            subject=f"template/{template.id}",
            tenant_id=template.tenant_id,
            data={"template_id": template.id, "format": fmt, "node": self._library.node},
            waiters=self._waiters,
        )
        job = asyncio.create_task(self._run(journal, template, fmt))
        self._running.add(job)
        job.add_done_callback(self._running.discard)
        return journal.task

    async def recover(self) -> int:
        """After a restart: fail the conversions this node was running when it stopped (their
        scratch files went with the repository's opening) and make their templates AVAILABLE
        again. A conversion is not resumed: it is asked for again. Returns how many."""
        found = 0
        after: str | None = None
        while True:
            page = await self._store.list(
                Task, where={"state": TaskState.RUNNING}, after=after, limit=500
            )
            for task in page.items:
                if task.kind == "template.convert" and task.data.get("node") == self._library.node:
                    found += 1
                    await self._end(
                        Journal(self._store, task, self._waiters),
                        str(task.data["template_id"]),
                        str(task.data["format"]),
                        None,
                        TaskState.FAILED,
                        "interrupted: the node stopped during the conversion; ask again",
                    )
            if page.next_cursor is None:
                return found
            after = page.next_cursor

    async def close(self) -> None:
        """Cancel the conversions running (their scratch files are removed) and wait."""
        for job in list(self._running):
            job.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self, journal: Journal, template: Template, fmt: str) -> None:
        repo = self._library.repository(template.datacenter_id)
        scratch = repo.scratch_path(fmt)
        sha: str | None = None
        outcome, error = TaskState.FAILED, None
        try:
            async with self._slots:
                sha = await self._convert(journal, template, fmt, scratch)
            outcome = TaskState.SUCCEEDED
        except asyncio.CancelledError:
            outcome, error = TaskState.CANCELLED, "cancelled"
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            _log.warning("template.convert_failed", template_id=template.id, error=error)
        finally:
            await asyncio.shield(self._end(journal, template.id, fmt, sha, outcome, error))
            await asyncio.to_thread(scratch.unlink, missing_ok=True)

    async def _convert(self, journal: Journal, template: Template, fmt: str, out: Path) -> str:
        repo = self._library.repository(template.datacenter_id)
        source = repo.object_path(template.checksum)
        deadline = self._settings.convert_deadline
        last = [0.0, 0.0]  # the fraction reported last, and when

        async def progress(fraction: float) -> None:
            now = asyncio.get_running_loop().time()
            due = fraction - last[0] >= _REPORT_EVERY and now - last[1] >= _REPORT_GAP
            if due or (fraction >= 1.0 > last[0]):
                last[0], last[1] = fraction, now
                await journal.report({"percent": round(fraction * 100, 1)})

        async def convert() -> None:
            await self._qemu.convert(
                source, template.disk_format, out, fmt, deadline=deadline, progress=progress
            )

        hashing: list[asyncio.Future[str]] = []

        async def compare() -> None:
            # The result's sha256 (its name in the library) is read beside the comparison:
            # both only read the file, and the store step then has little left to wait for.
            hashing.append(asyncio.ensure_future(asyncio.to_thread(sha256_of, out)))
            same = await self._qemu.compare(
                source, template.disk_format, out, fmt, deadline=deadline
            )
            if not same:
                raise DriverError(f"the {fmt} image differs from its source", code="compare")

        async def store() -> str:
            sha = await hashing[-1] if hashing else await asyncio.to_thread(sha256_of, out)
            await repo.admit(out, sha)
            return sha

        try:
            await journal.step("convert", convert, deadline=deadline, data={"format": fmt})
            await journal.step("compare", compare, deadline=deadline)
            return await journal.step("store", store, deadline=deadline)
        finally:
            for job in hashing:  # a failed compare leaves it running: its result is dropped
                job.add_done_callback(_drop)

    async def _end(
        self,
        journal: Journal,
        template_id: str,
        fmt: str,
        sha: str | None,
        outcome: TaskState,
        error: str | None,
    ) -> None:
        """Back to AVAILABLE (with the new format on success), then the task's end."""
        for _ in range(5):
            try:
                current = await self._store.get(Template, template_id)
            except NotFound:
                break
            if current.state is not TemplateState.CONVERTING:
                break
            formats = {**current.formats, fmt: sha} if sha else current.formats
            try:
                await self._store.update(
                    Template,
                    template_id,
                    expected_version=current.version,
                    events=[_event(current, TemplateState.AVAILABLE)],
                    state=TemplateState.AVAILABLE,
                    formats=formats,
                )
                break
            except VersionConflict:  # a concurrent change of the record: read again
                continue
        await journal.finish(outcome, error)


def _drop(job: asyncio.Future[str]) -> None:
    if not job.cancelled():
        job.exception()  # retrieved, so asyncio does not log it as lost


def _event(template: Template, state: TemplateState) -> OutboxEvent:
    return OutboxEvent(
        type="template.state_changed",
        subject=f"template/{template.id}",
        tenant_id=template.tenant_id,
        data={"template_id": template.id, "state": str(state), "from": str(template.state)},
    )
