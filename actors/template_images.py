"""The last gate of an image entering the library, shared by uploads and imports.

A complete partial file (``uploads/<template>.part``) is checked: its sha256 against the one
declared (if any), then :func:`cloudcore.images.inspect` (the real format, no backing file, no
extra files, ``qemu-img check``). Refused, the partial file is removed and the template made
ERROR with the reason; accepted, the file is renamed into the library under its sha256 (once per
content) and the template made AVAILABLE with what ``qemu-img info`` said.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cloudcore.errors import ImageRejected, VersionConflict
from cloudcore.images import ImageRepository, QemuImg, inspect
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import OutboxEvent, Template, TemplateState
from cloudcore.store.usage import template_usage

__all__ = ["accept_image", "change_template", "quota_delta", "reject_image"]

_log = get_logger("actors.template_images")
_GIB = 1024**3


async def accept_image(
    store: Store,
    qemu: QemuImg,
    repo: ImageRepository,
    template: Template,
    sha256: str,
    *,
    deadline: float,
) -> Template:
    """Check the complete partial file of ``template`` whose bytes hash to ``sha256``; into the
    library and AVAILABLE, or removed, ERROR, and ImageRejected raised."""
    partial = repo.partial_path(template.id)
    try:
        if template.upload_sha256 and sha256 != template.upload_sha256:
            raise ImageRejected(
                f"sha256: the image's is {sha256}, the declared {template.upload_sha256}"
            )
        info = await inspect(qemu, partial, deadline=deadline)
    except ImageRejected as exc:
        await reject_image(store, repo, template, str(exc))
        raise
    stored, new = await repo.admit(partial, sha256)
    actual = (await asyncio.to_thread(stored.stat)).st_blocks * 512
    _log.info("template.image_stored", template_id=template.id, sha256=sha256, new=new)
    return await change_template(
        store,
        template,
        state=TemplateState.AVAILABLE,
        disk_format=info.format,
        virtual_size=info.virtual_size,
        actual_size=actual,
        size_gib=-(-info.virtual_size // _GIB),
        checksum=sha256,
        formats={info.format: sha256},
        error=None,
    )


async def reject_image(
    store: Store, repo: ImageRepository, template: Template, reason: str
) -> Template:
    """The partial file removed and the template ERROR, saying why."""
    await repo.discard_partial(template.id)
    return await change_template(store, template, state=TemplateState.ERROR, error=reason)


def quota_delta(template: Template, upload_size: int) -> dict[str, int]:
    """How the tenant's usage moves when ``template`` declares an image of ``upload_size``."""
    now, then = template_usage(upload_size), template_usage(template.upload_size)
    return {r: now[r] - then[r] for r in now if now[r] != then[r]}


async def change_template(store: Store, template: Template, **changes: Any) -> Template:
    """Compare-and-set ``changes``, with a ``template.state_changed`` event if the state moves;
    read again once if another writer got there first. A change of ``upload_size`` moves the
    tenant's ``template_gib`` usage in the same transaction (QuotaExceeded: nothing changed)."""
    for attempt in range(2):
        events = []
        state = changes.get("state")
        if state is not None and state != template.state:
            events.append(
                OutboxEvent(
                    type="template.state_changed",
                    subject=f"template/{template.id}",
                    tenant_id=template.tenant_id,
                    data={
                        "template_id": template.id,
                        "state": str(state),
                        "error": changes.get("error"),
                    },
                )
            )
        try:
            if "upload_size" in changes:
                return await store.update_charged(
                    Template,
                    template.id,
                    expected_version=template.version,
                    tenant_id=template.tenant_id,
                    delta=quota_delta(template, changes["upload_size"]),
                    events=events,
                    **changes,
                )
            return await store.update(
                Template, template.id, expected_version=template.version, events=events, **changes
            )
        except VersionConflict:
            if attempt:
                raise
            template = await store.get(Template, template.id)
    raise AssertionError("unreachable")
