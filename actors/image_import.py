"""Template imports from a URL: a download and the upload's checks, as a journaled task.

``template.import`` has two steps: ``download`` (:func:`cloudcore.images.fetch`: streamed into
the template's partial upload file, a dropped connection resumed with a Range request, bounded
attempts, its progress in the step's ``data``) and ``accept`` (the same gate as an upload:
sha256 if one was declared, ``qemu-img info``/``check``, into the library). The template is
UPLOADING meanwhile; a refusal makes it ERROR with no partial file left; running out of attempts
leaves it UPLOADING with the bytes that arrived, so importing the same URL again resumes. The
task always ends: SUCCEEDED, FAILED with the reason, or CANCELLED (the node stopping).
:meth:`ImageImporter.recover` fails the imports a node left RUNNING when it stopped.
"""

from __future__ import annotations

import asyncio

from actors.journal import Journal, TaskWaiters
from actors.template_images import accept_image, change_template, reject_image
from actors.template_lifecycle import TemplateOperation, transition
from actors.template_tasks import Background, Progress, running_tasks
from cloudcore.config import ImagesSettings
from cloudcore.errors import Conflict, ImageRejected, NotFound, QuotaExceeded
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.images.fetch import Fetched, FetchLimits, check_url, fetch
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import Task, TaskState, Template, TemplateState

__all__ = ["ImageImporter"]

_log = get_logger("actors.image_import")


class ImageImporter:
    """Starts imports and runs them in the background."""

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
        self._jobs = Background()

    async def start(
        self, template: Template, url: str, *, sha256: str | None, size: int | None
    ) -> Task:
        """Begin importing ``url`` into ``template``; the task, RUNNING. InvalidRequest for a
        URL that is not http(s), ImageRejected for a size beyond the maximum, IllegalTransition
        for a template that is CONVERTING or DELETING, Conflict if its upload is in progress."""
        check_url(url)
        limit = self._settings.max_upload_bytes
        if size is not None and size > limit:
            raise ImageRejected(f"size: {size} bytes is beyond the maximum {limit}")
        step = transition(TemplateOperation.UPLOAD, template.state, template.id)
        if template.id in self._library.uploading:
            raise Conflict(f"an upload or import of template {template.id} is in progress")
        self._library.uploading.add(template.id)
        try:
            template = await self._begin(template, step.transient, url, sha256, size)
            journal = await Journal.begin(
                self._store,
                kind="template.import",
                subject=f"template/{template.id}",
                tenant_id=template.tenant_id,
                data={"template_id": template.id, "url": url, "node": self._library.node},
                waiters=self._waiters,
            )
        except BaseException:
            self._library.uploading.discard(template.id)
            raise
        self._jobs.spawn(self._run(journal, template, size))
        return journal.task

    async def _begin(
        self,
        template: Template,
        uploading: TemplateState,
        url: str,
        sha256: str | None,
        size: int | None,
    ) -> Template:
        """UPLOADING from this URL: the bytes of an earlier import of the same URL and image
        kept, anything else started over."""
        same = (
            template.state is TemplateState.UPLOADING
            and template.source == url
            and template.upload_sha256 == (sha256 or "")
            and (size is None or template.upload_size == size)
        )
        repo = self._library.repository(template.datacenter_id)
        if not same:
            await repo.discard_partial(template.id)
        return await change_template(
            self._store,
            template,
            state=uploading,
            source=url,
            # Unknown until the server says it (then taken from the quota); kept when resuming.
            upload_size=size if size is not None else (template.upload_size if same else 0),
            upload_sha256=sha256 or "",
            uploaded_bytes=await repo.partial_size(template.id),
            error=None,
        )

    async def recover(self) -> int:
        """After a restart: fail the imports this node was running when it stopped; their
        templates stay UPLOADING with the bytes kept (importing again resumes)."""
        found = 0
        async for task in running_tasks(self._store, "template.import"):
            if task.data.get("node") == self._library.node:
                found += 1
                await Journal(self._store, task, self._waiters).finish(
                    TaskState.FAILED,
                    "interrupted: the node stopped during the import; ask again to resume",
                )
        return found

    async def close(self) -> None:
        """Cancel the imports running (their bytes kept) and wait."""
        await self._jobs.close()

    async def _run(self, journal: Journal, template: Template, size: int | None) -> None:
        outcome, error = TaskState.FAILED, None
        try:
            await self._import(journal, template, size)
            outcome = TaskState.SUCCEEDED
        except asyncio.CancelledError:
            outcome, error = TaskState.CANCELLED, "cancelled"
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            _log.warning("template.import_failed", template_id=template.id, error=error)
        finally:
            self._library.uploading.discard(template.id)
            await asyncio.shield(journal.finish(outcome, error))

    async def _import(self, journal: Journal, template: Template, size: int | None) -> None:
        repo = self._library.repository(template.datacenter_id)
        settings = self._settings
        limits = FetchLimits(
            max_bytes=settings.max_upload_bytes,
            attempts=settings.import_attempts,
            read_timeout=settings.import_read_timeout,
        )
        report = Progress(journal)

        async def progress(done: int, total: int | None) -> None:
            await report(done / total if total else 0.0, bytes=done)

        async def sized(total: int) -> None:
            """The image's size, once known: what the template holds of the tenant's quota."""
            current = await self._current(template)
            if current.upload_size != total:
                await change_template(self._store, current, upload_size=total)

        async def download() -> Fetched:
            try:
                fetched = await fetch(
                    template.source,
                    repo,
                    template.id,
                    size=size,
                    limits=limits,
                    progress=progress,
                    sized=sized,
                )
                await sized(fetched.size)  # a server that never said the size
                return fetched
            except (ImageRejected, QuotaExceeded) as exc:
                await reject_image(self._store, repo, await self._current(template), str(exc))
                raise
            finally:
                held = await repo.partial_size(template.id)
                current = await self._current(template)
                if current.state is TemplateState.UPLOADING:
                    await asyncio.shield(change_template(self._store, current, uploaded_bytes=held))

        fetched = await journal.step(
            "download", download, deadline=settings.import_deadline, retry=False
        )

        async def accept() -> None:
            await accept_image(
                self._store,
                self._qemu,
                repo,
                await self._current(template),
                fetched.sha256,
                deadline=settings.inspect_deadline,
            )

        await journal.step("accept", accept, deadline=settings.inspect_deadline * 2, retry=False)

    async def _current(self, template: Template) -> Template:
        try:
            return await self._store.get(Template, template.id)
        except NotFound:
            return template
