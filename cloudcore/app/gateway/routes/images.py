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

from actors.conversion import request_conversion
from actors.routed_services import conversion_route, send_conversion
from actors.template_images import accept_image, change_template
from actors.template_lifecycle import TemplateOperation, transition
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.context import Gateway
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.lookup import visible
from cloudcore.app.gateway.tasks import accepted
from cloudcore.errors import UnsupportedOperation
from cloudcore.images import ImageLibrary, ImageRepository, UploadFile
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import Datacenter, Role, Template, TemplateState

__all__ = ["ConversionCreate", "ImportCreate", "RepositoryView", "UploadQuery", "api"]

api = Api("templates")
_log = get_logger("gateway.images")

_BLOCK = 4 * 1024 * 1024
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_GIB = 1024**3


class UploadQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the uploader declares of the whole image: its size in bytes and its sha256."""

    size: Annotated[int, msgspec.Meta(ge=1)]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class ImportCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An image to fetch (http or https only) and, optionally, what it must be: its sha256 and
    size in bytes (checked before it enters the library)."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")] | None = None
    size: Annotated[int, msgspec.Meta(ge=1)] | None = None


class ConversionCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The format to convert a template's image to (``vpc`` is VHD); ``compare``: check the
    result against the source with ``qemu-img compare`` (a full read of both; default: the
    node's ``images.compare_conversions``)."""

    format: Literal["raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi"]
    compare: bool | None = None


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
        return await accept_image(
            gateway.store,
            gateway.qemu,
            repo,
            template,
            upload.hexdigest(),
            deadline=gateway.settings.images.inspect_deadline,
        )
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
    return await change_template(
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
    fsynced and recorded, so the uploader can resume after it. Bytes are gathered into 4 MiB
    blocks, each written and hashed (in two threads) while the next block arrives."""
    buffer = bytearray()
    writing: asyncio.Future[None] | None = None
    received = upload.size
    try:
        async for chunk in req.raw.content.iter_any():
            room = end - received
            buffer += chunk[:room]
            received += min(len(chunk), room)
            if len(chunk) > room:
                raise ApiError(400, "bad_request", f"the body goes past byte {end}")
            if len(buffer) >= _BLOCK:
                if writing is not None:
                    await writing
                # The block is handed over whole (no copy) and a new one gathered.
                writing = asyncio.ensure_future(upload.write(buffer))
                buffer = bytearray()
    except (aiohttp.ClientPayloadError, ConnectionError) as exc:
        _log.info("template.upload_interrupted", template_id=template.id, error=str(exc))
    finally:
        if writing is not None:
            await asyncio.shield(writing)
        if buffer:
            await asyncio.shield(upload.write(buffer))
        await asyncio.shield(upload.close())
        recorded = change_template(store, template, uploaded_bytes=upload.size)
        template = await asyncio.shield(recorded)
    return template


@api.post(
    "/templates/{template_id}/import",
    body=ImportCreate,
    status=202,
    summary="Import a template's disk image from an http(s) URL (a task)",
    errors=(403, 404, 409, 413, 422),
)
async def import_image(req: ApiRequest[ImportCreate, None]) -> Reply:
    """The download resumes after dropped connections; the image passes the upload's checks."""
    body, gateway = req.body, req.gateway
    if gateway.importer is None:
        raise UnsupportedOperation("this node runs no image imports")
    template = await _modifiable(req)
    limit = gateway.settings.images.max_upload_bytes
    if body.size is not None and body.size > limit:
        raise ApiError(413, "image_too_large", f"the image is larger than {limit} bytes")
    task = await gateway.importer.start(template, body.url, sha256=body.sha256, size=body.size)
    return await accepted(req, task)


@api.post(
    "/templates/{template_id}/conversions",
    body=ConversionCreate,
    status=202,
    summary="Convert a template's image to another format (a task)",
    errors=(403, 404, 409, 422),
)
async def convert_template(req: ApiRequest[ConversionCreate, None]) -> Reply:
    """The task is PENDING until the converter of the template's datacenter claims it (a
    shared template's: this node's, or the first datacenter's whose node is up): that
    converter is told at once, through its node if the datacenter runs on another (503 with
    Retry-After before anything is written if that node is down)."""
    template = await _modifiable(req)
    orchestrator = req.gateway.orchestrator
    route = await conversion_route(orchestrator, template.datacenter_id)
    task = await request_conversion(
        req.gateway.store,
        template,
        req.body.format,
        datacenter_id=template.datacenter_id,
        join=False,
        compare=req.body.compare,
    )
    return await accepted(req, await send_conversion(orchestrator, route, task))


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
