"""One template conversion (V2V): how it is asked for, and the work of its task.

A conversion is asked for by writing its task PENDING (``template.convert``, data: template,
format, datacenter) after the template's compare-and-set from AVAILABLE to CONVERTING: of two
askers, API requests or deploys on any node, one wins the template and writes the task, and the
other, joining, is given that task (:func:`request_conversion`). The converter actor of the
datacenter (:mod:`actors.converter`) claims it and runs :func:`convert`, three journaled steps:

- ``convert``: ``qemu-img convert -p`` into ``tmp/<node>/<task id>.<format>``, its progress
  parsed into the step's ``data.percent``;
- ``compare``, when asked (``"compare": true`` in the request, or ``images.compare_conversions``):
  ``qemu-img compare`` with the source, the same guest-visible bytes or the task fails (a full
  read of both images: as long again as the conversion); the result's sha256 is read beside it;
- ``store``: ``qemu-img info`` of the result (the format asked for, the source's virtual size),
  its sha256 read while it is fsynced (a thread each), then renamed into the library.

:func:`end` makes the template AVAILABLE again, with the new format on success, and ends the
task. The scratch file is named by the task, so a conversion started again after a crash removes
what the interrupted one left before it begins: never a half file in the library.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from actors.journal import FINAL, Journal, backoff
from actors.paging import all_records
from actors.template_lifecycle import TemplateOperation, transition
from actors.template_tasks import Progress
from cloudcore.config import ImagesSettings
from cloudcore.errors import (
    AlreadyExists,
    DriverError,
    IllegalTransition,
    InvalidRequest,
    NotFound,
    VersionConflict,
)
from cloudcore.images import FORMATS, ImageRepository, QemuImg, fsync_file, sha256_of
from cloudcore.runtime import Message
from cloudcore.store import Store
from cloudcore.store.records import (
    OutboxEvent,
    Task,
    TaskState,
    Template,
    TemplateState,
    new_id,
)

__all__ = [
    "CONVERT",
    "Convert",
    "convert",
    "end",
    "free_orphans",
    "request_conversion",
    "scratch_of",
]

CONVERT = "template.convert"
_JOIN_TRIES = 8  # the winner writes its task right after the template: found within a second


class Convert(Message, frozen=True, kw_only=True):
    """To a datacenter's converter: convert a template to ``format`` (for a deploy of that
    datacenter), or join the conversion under way. Replies with its task (PENDING or RUNNING);
    AlreadyExists if the template has the format, IllegalTransition if its state allows no
    conversion (NEW, UPLOADING, ...)."""

    template_id: str
    format: str


async def request_conversion(
    store: Store,
    template: Template,
    fmt: str,
    *,
    datacenter_id: str | None,
    join: bool,
    compare: bool | None = None,
) -> Task:
    """The task converting ``template`` to ``fmt``, written PENDING; ``compare``: check the
    result with ``qemu-img compare`` (None: as ``images.compare_conversions``). ``join``: a template
    CONVERTING already gives the task converting it (to ``fmt`` or another format: wait for it,
    then ask again); else that is an IllegalTransition. InvalidRequest for an unknown format,
    AlreadyExists if the template has it, IllegalTransition if its state allows no conversion."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"format: {fmt!r} is not one of {', '.join(sorted(FORMATS))}")
    if fmt in template.formats:
        raise AlreadyExists(f"template {template.id} is available in {fmt} already")
    if join and template.state is TemplateState.CONVERTING:
        return await _in_flight(store, template)
    step = transition(TemplateOperation.CONVERT, template.state, template.id)
    try:
        await _set_state(store, template, step.transient)
    except VersionConflict:
        if not join:
            raise
        current = await store.get(Template, template.id)
        return await request_conversion(store, current, fmt, datacenter_id=datacenter_id, join=join)
    return await store.create(
        Task(
            id=new_id("task-"),
            tenant_id=template.tenant_id,
            kind=CONVERT,
            subject=f"template/{template.id}",
            state=TaskState.PENDING,
            data={
                "template_id": template.id,
                "format": fmt,
                "datacenter_id": datacenter_id or template.datacenter_id,
                **({} if compare is None else {"compare": compare}),
            },
        )
    )


async def _in_flight(store: Store, template: Template) -> Task:
    """The conversion task of a CONVERTING template (written just after its state)."""
    for attempt in range(_JOIN_TRIES):
        task = await _live_task(store, template)
        if task is not None:
            return task
        await asyncio.sleep(backoff(attempt))  # the winner has not written its task yet
    raise IllegalTransition(f"template {template.id} is CONVERTING with no conversion task")


async def free_orphans(store: Store, datacenter_id: str, grace: float = 60.0) -> int:
    """Templates of ``datacenter_id`` (and shared ones) CONVERTING for ``grace`` seconds with
    no conversion task PENDING or RUNNING (a crash between the template's change and its
    task's write): AVAILABLE again. Returns how many."""
    freed = 0
    before = datetime.now(UTC) - timedelta(seconds=grace)
    for where in ({"datacenter_id": datacenter_id}, {"datacenter_id": None}):
        async for template in all_records(
            store, Template, {**where, "state": TemplateState.CONVERTING}
        ):
            if template.updated_at > before or await _live_task(store, template) is not None:
                continue
            with contextlib.suppress(VersionConflict):  # changed meanwhile: not an orphan
                await _set_state(store, template, TemplateState.AVAILABLE)
                freed += 1
    return freed


async def _live_task(store: Store, template: Template) -> Task | None:
    """The conversion task of ``template`` RUNNING or PENDING, if there is one."""
    subject = f"template/{template.id}"
    for state in (TaskState.RUNNING, TaskState.PENDING):
        page = await store.list(Task, where={"subject": subject, "state": state})
        for task in page.items:
            if task.kind == CONVERT:
                return task
    return None


def scratch_of(repo: ImageRepository, task: Task) -> Path:
    """Where ``task`` writes its result before it is stored: named by the task."""
    return repo.scratch_path(str(task.data["format"]), task.id)


async def convert(
    journal: Journal,
    qemu: QemuImg,
    repo: ImageRepository,
    template: Template,
    fmt: str,
    settings: ImagesSettings,
) -> str:
    """The steps of one conversion; the sha256 of the result, stored in ``repo``."""
    source = repo.object_path(template.checksum)
    out = scratch_of(repo, journal.task)
    deadline = settings.convert_deadline
    await asyncio.to_thread(out.unlink, missing_ok=True)  # what an interrupted run left
    report = Progress(journal)
    hashing: list[asyncio.Future[str]] = []

    async def write() -> None:
        await qemu.convert(
            source, template.disk_format, out, fmt, deadline=deadline, progress=report
        )

    async def compare() -> None:
        # The result's sha256 (its name in the library) is read beside the comparison: both
        # only read the file, and the store step then has little left to wait for.
        hashing.append(asyncio.ensure_future(asyncio.to_thread(sha256_of, out)))
        if not await qemu.compare(source, template.disk_format, out, fmt, deadline=deadline):
            raise DriverError(f"the {fmt} image differs from its source", code="compare")

    async def store() -> str:
        if not hashing:
            hashing.append(asyncio.ensure_future(asyncio.to_thread(sha256_of, out)))
        # qemu-img info, the sha256 and the fsync at once: each waits on something else.
        info, _ = await asyncio.gather(
            qemu.info(out, deadline=settings.inspect_deadline),
            asyncio.to_thread(fsync_file, out),
        )
        size = template.virtual_size
        if info.format != fmt or (size and info.virtual_size != size):
            raise DriverError(
                f"the result is a {info.format} image of {info.virtual_size} bytes, not a {fmt} "
                f"image of {size}",
                code="qemu-img",
            )
        sha = await hashing[-1]
        await repo.admit(out, sha, fsynced=True)
        return sha

    try:
        await journal.step("convert", write, deadline=deadline, data={"format": fmt})
        if journal.task.data.get("compare", settings.compare_conversions):
            await journal.step("compare", compare, deadline=deadline)
        return await journal.step("store", store, deadline=deadline)
    finally:
        for job in hashing:  # a failed compare leaves it running: its result is dropped
            job.add_done_callback(_drop)


async def end(
    store: Store,
    journal: Journal,
    fmt: str,
    sha: str | None,
    outcome: TaskState,
    error: str | None,
) -> Task:
    """The template back to AVAILABLE (with the new format on success), then the task's end."""
    template_id = str(journal.task.data["template_id"])
    for _ in range(5):
        try:
            current = await store.get(Template, template_id)
        except NotFound:
            break
        if current.state is not TemplateState.CONVERTING:
            break
        formats = {**current.formats, fmt: sha} if sha else current.formats
        try:
            await _set_state(store, current, TemplateState.AVAILABLE, formats=formats)
            break
        except VersionConflict:  # a concurrent change of the record: read again
            continue
    if journal.task.state in FINAL:
        return journal.task
    return await journal.finish(outcome, error)


def _drop(job: asyncio.Future[str]) -> None:
    if not job.cancelled():
        job.exception()  # retrieved, so asyncio does not log it as lost


async def _set_state(
    store: Store, template: Template, state: TemplateState, **changes: Any
) -> Template:
    """``template`` in ``state`` (compare-and-set), with its ``template.state_changed``."""
    return await store.update(
        Template,
        template.id,
        expected_version=template.version,
        events=[_event(template, state)],
        state=state,
        **changes,
    )


def _event(template: Template, state: TemplateState) -> OutboxEvent:
    return OutboxEvent(
        type="template.state_changed",
        subject=f"template/{template.id}",
        tenant_id=template.tenant_id,
        data={"template_id": template.id, "state": str(state), "from": str(template.state)},
    )
