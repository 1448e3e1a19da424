"""Template images: the streamed upload, conversions, and the repositories' capacity.

``PUT /templates/{id}/image?size=N&sha256=HEX`` streams the body to a partial file outside the
library (never whole in memory; ``api.max_body_bytes`` is for JSON bodies, this route has
``images.max_upload_bytes``). ``Content-Range: bytes START-END/TOTAL`` resumes an upload at
START, which must be the number of bytes the server holds (the template's ``uploaded_bytes``;
any other START is a 416 naming it); without the header an upload starts over. An interrupted
request leaves the template UPLOADING with what arrived fsynced. The last byte is followed by the
checks: size and sha256 as declared, then ``qemu-img info`` (the real format, whatever the name
said; no backing file) and ``qemu-img check``. A failure makes the template ERROR and removes
the partial file; success moves the file into the library under its sha256 (once per content)
and makes the template AVAILABLE.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

import aiohttp
import msgspec

from actors.converter import ImageConverter
from actors.template_lifecycle import TemplateOperation, transition
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.context import Gateway
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.lookup import visible
from cloudcore.app.gateway.tasks import accepted
from cloudcore.errors import ImageRejected, UnsupportedOperation, VersionConflict
from cloudcore.images import ImageLibrary, ImageRepository, UploadFile, inspect
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import Datacenter, OutboxEvent, Role, Template, TemplateState

__all__ = ["ConversionCreate", "RepositoryView", "UploadQuery", "api"]

api = Api("templates")
_log = get_logger("gateway.images")

_CHUNK = 1024 * 1024
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_GIB = 1024**3


class UploadQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the uploader declares of the whole image: its size in bytes and its sha256."""

    size: Annotated[int, msgspec.Meta(ge=1)]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class ConversionCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The format to convert a template's image to (``vpc`` is VHD)."""

    format: Literal["raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi"]


class RepositoryView(msgspec.Struct, frozen=True, kw_only=True):
    """A datacenter's image repository: its file system and what the library holds (bytes)."""

    datacenter_id: str
    total_bytes: int
    free_bytes: int
    library_bytes: int
    images: int


def _library(gateway: Gateway) -> ImageLibrary:
    if gateway.images is None:
        raise UnsupportedOperation("this node serves no image library")
    return gateway.images


def _converter(gateway: Gateway) -> ImageConverter:
    if gateway.converter is None:
        raise UnsupportedOperation("this node runs no image conversions")
    return gateway.converter


async def _modifiable(req: ApiRequest[Any, Any]) -> Template:
    template = await visible(req, Template, req.params["template_id"], "template")
    principal = req.principal
    if principal.role is not Role.ADMIN and template.tenant_id != principal.tenant_id:
        raise ApiError(403, "forbidden", "only admins change public or other tenants' templates")
    return template


@api.put(
    "/templates/{template_id}/image",
    query=UploadQuery,
    reply=Template,
    summary="Upload a template's disk image (streamed, resumable with Content-Range)",
    errors=(403, 404, 409, 413, 416, 422),
    stream_body="application/octet-stream",
)
async def upload_image(req: ApiRequest[None, UploadQuery]) -> Template:
    gateway, q = req.gateway, req.query
    library = _library(gateway)
    template = await _modifiable(req)
    limit = gateway.settings.images.max_upload_bytes
    if q.size > limit:
        raise ApiError(413, "image_too_large", f"the image is larger than {limit} bytes")
    start, end = _content_range(req.raw.headers.get("Content-Range"), q.size)
    if template.id in library.uploading:
        raise ApiError(409, "conflict", f"an upload of template {template.id} is in progress")
    library.uploading.add(template.id)
    try:
        repo = library.repository(template.datacenter_id)
        template = await _begin(gateway.store, repo, template, q, start)
        held = await repo.partial_size(template.id)
        if start not in (0, held):
            raise ApiError(
                416,
                "range_not_satisfiable",
                f"the upload holds {held} bytes: resume at byte {held}",
                {"offset": held},
                {"Range": f"bytes=0-{held - 1}"} if held else None,
            )
        upload = await repo.open_upload(template.id, start)
        template = await _receive(req, gateway.store, template, upload, end)
        if upload.size < q.size:
            return template
        return await _accept(gateway, repo, template, upload.hexdigest())
    finally:
        library.uploading.discard(template.id)


def _content_range(header: str | None, size: int) -> tuple[int, int]:
    """(first byte, one past the last byte) this request carries."""
    if header is None:
        return 0, size
    found = _RANGE.match(header.strip())
    if found is None:
        raise ApiError(400, "bad_request", "Content-Range must be 'bytes START-END/TOTAL'")
    first, last, total = (int(g) for g in found.groups())
    if total != size or first > last or last >= size:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"Content-Range {header!r} does not fit the declared size {size}",
        )
    return first, last + 1


async def _begin(
    store: Store, repo: ImageRepository, template: Template, q: UploadQuery, start: int
) -> Template:
    """The template UPLOADING this declared image: the same upload resumed, or a new one (a new
    one starts at byte 0)."""
    step = transition(TemplateOperation.UPLOAD, template.state, template.id)
    same = (
        template.state is TemplateState.UPLOADING
        and template.upload_size == q.size
        and template.upload_sha256 == q.sha256
    )
    if same:
        return template
    if start != 0:
        raise ApiError(
            416,
            "range_not_satisfiable",
            "no upload of this image is in progress: start at byte 0",
            {"offset": 0},
        )
    await repo.discard_partial(template.id)
    return await _change(
        store,
        template,
        state=step.transient,
        upload_size=q.size,
        upload_sha256=q.sha256,
        uploaded_bytes=0,
        error=None,
    )


async def _receive(
    req: ApiRequest[Any, Any], store: Store, template: Template, upload: UploadFile, end: int
) -> Template:
    """Append the body to the partial file until ``end``; whatever happens, what arrived is
    fsynced and recorded, so the uploader can resume after it."""
    try:
        async for chunk in req.raw.content.iter_chunked(_CHUNK):
            room = end - upload.size
            await upload.write(chunk[:room])
            if len(chunk) > room:
                raise ApiError(400, "bad_request", f"the body goes past byte {end}")
    except (aiohttp.ClientPayloadError, ConnectionError) as exc:
        _log.info("template.upload_interrupted", template_id=template.id, error=str(exc))
    finally:
        await asyncio.shield(upload.close())
        template = await asyncio.shield(_change(store, template, uploaded_bytes=upload.size))
    return template


async def _accept(
    gateway: Gateway, repo: ImageRepository, template: Template, sha256: str
) -> Template:
    """Check the complete upload; into the library and AVAILABLE, or removed and ERROR."""
    settings = gateway.settings.images
    partial = repo.partial_path(template.id)
    try:
        if sha256 != template.upload_sha256:
            raise ImageRejected(
                f"sha256: the image's is {sha256}, the declared {template.upload_sha256}"
            )
        info = await inspect(gateway.qemu, partial, deadline=settings.inspect_deadline)
    except ImageRejected as exc:
        await repo.discard_partial(template.id)
        await _change(gateway.store, template, state=TemplateState.ERROR, error=str(exc))
        raise
    stored, new = await repo.admit(partial, sha256)
    actual = (await asyncio.to_thread(stored.stat)).st_blocks * 512
    _log.info("template.image_stored", template_id=template.id, sha256=sha256, new=new)
    return await _change(
        gateway.store,
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


async def _change(store: Store, template: Template, **changes: Any) -> Template:
    """Compare-and-set ``changes``, with a ``template.state_changed`` event if the state moves;
    read again once if another writer got there first."""
    for attempt in range(2):
        events = []
        state = changes.get("state")
        if state is not None and state != template.state:
            events.append(
                OutboxEvent(
                    type="template.state_changed",
                    subject=f"template/{template.id}",
                    tenant_id=template.tenant_id,
                    data={"template_id": template.id, "state": str(state), "error": None},
                )
            )
        try:
            return await store.update(
                Template, template.id, expected_version=template.version, events=events, **changes
            )
        except VersionConflict:
            if attempt:
                raise
            template = await store.get(Template, template.id)
    raise AssertionError("unreachable")


@api.post(
    "/templates/{template_id}/conversions",
    body=ConversionCreate,
    status=202,
    summary="Convert a template's image to another format (a task)",
    errors=(403, 404, 409, 422),
)
async def convert_template(req: ApiRequest[ConversionCreate, None]) -> Reply:
    template = await _modifiable(req)
    task = await _converter(req.gateway).start(template, req.body.format)
    return await accepted(req, task)


@api.get(
    "/image-repositories/{datacenter_id}",
    reply=RepositoryView,
    summary="A datacenter's image repository and its capacity (admins and operators)",
    errors=(403, 404),
)
async def get_repository(req: ApiRequest[None, None]) -> RepositoryView:
    """``_shared`` is the repository of templates usable in every datacenter."""
    if not req.principal.sees_all:
        raise ApiError(403, "forbidden", "only admins and operators see image repositories")
    datacenter_id = req.params["datacenter_id"]
    if datacenter_id != ImageLibrary.SHARED:
        await visible(req, Datacenter, datacenter_id, "datacenter")
    capacity = await _library(req.gateway).repository(datacenter_id).capacity()
    return RepositoryView(
        datacenter_id=datacenter_id,
        total_bytes=capacity.total_bytes,
        free_bytes=capacity.free_bytes,
        library_bytes=capacity.library_bytes,
        images=capacity.images,
    )
