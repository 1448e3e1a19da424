"""Templates: disk images of the library. A tenant's own, or public (``tenant_id`` null, made by
admins) for everyone. A user sees its tenant's and the public ones; admins and operators all."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from actors.template_images import quota_delta
from actors.template_lifecycle import TemplateOperation, transition
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import Principal
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.listing import order_of, sorted_page
from cloudcore.app.gateway.lookup import referenced, visible
from cloudcore.app.gateway.schemas import NamedQuery
from cloudcore.app.gateway.shared import own_and_public
from cloudcore.errors import Conflict
from cloudcore.images import ImageLibrary
from cloudcore.store import Store
from cloudcore.store.records import (
    Datacenter,
    Page,
    Role,
    Template,
    TemplateState,
    Tenant,
    new_id,
)

__all__ = ["TemplateCreate", "api"]

api = Api("templates")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
_Short = Annotated[str, msgspec.Meta(max_length=64)]


class TemplateCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new template. ``tenant_id`` left out: the caller's tenant; another tenant: admins and
    operators only; null: a public template, admins only. ``datacenter_id`` null: usable in
    every datacenter."""

    name: _Name
    datacenter_id: _Id | None = None
    os_type: _Short = ""
    disk_format: _Short = "qcow2"
    source: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    size_gib: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 0
    tenant_id: _Id | msgspec.UnsetType | None = msgspec.UNSET
    #: The least a VM deployed from it must have (a deploy below is refused, naming the field).
    min_cpus: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
    min_memory_mib: Annotated[int, msgspec.Meta(ge=0, le=16 * 1024 * 1024)] = 0


def _owner(principal: Principal, requested: str | msgspec.UnsetType | None) -> str | None:
    if requested is msgspec.UNSET or requested == principal.tenant_id:
        return principal.tenant_id
    if requested is None:
        if principal.role is not Role.ADMIN:
            raise ApiError(403, "forbidden", "only admins create public templates")
        return None
    if not principal.sees_all:
        raise ApiError(
            403, "forbidden", "only admins and operators create templates for another tenant"
        )
    return requested


async def _visible(req: ApiRequest[Any, Any]) -> Template:
    return await visible(req, Template, req.params["template_id"], "template")


@api.get("/templates", query=NamedQuery, reply=Page[Template], summary="List templates")
async def list_templates(req: ApiRequest[None, NamedQuery]) -> Page[Template]:
    """The newest first unless ``sort`` says otherwise. A user's pages interleave its
    tenant's templates with the public ones."""
    q, store = req.query, req.gateway.store
    where = {} if q.name is None else {"name": q.name}
    scope = req.principal.scope()
    if scope is None:
        return await sorted_page(store, Template, where, q)
    order = order_of(q.sort)
    return await own_and_public(store, Template, scope, q.cursor, q.limit, where=where, order=order)


@api.get("/templates/{template_id}", reply=Template, summary="Get a template", errors=(404,))
async def get_template(req: ApiRequest[None, None]) -> Template:
    return await _visible(req)


@api.post(
    "/templates",
    body=TemplateCreate,
    reply=Template,
    status=201,
    summary="Add a template to the library",
    errors=(403,),
)
async def create_template(req: ApiRequest[TemplateCreate, None]) -> Reply:
    body, store = req.body, req.gateway.store
    tenant_id = _owner(req.principal, body.tenant_id)
    if tenant_id is not None:
        await referenced(store, Tenant, tenant_id, "tenant_id", "tenant")
    if body.datacenter_id is not None:
        await referenced(store, Datacenter, body.datacenter_id, "datacenter_id", "datacenter")
    template = await store.create(
        Template(
            id=new_id("tpl-"),
            tenant_id=tenant_id,
            datacenter_id=body.datacenter_id,
            name=body.name,
            os_type=body.os_type,
            disk_format=body.disk_format,
            source=body.source,
            size_gib=body.size_gib,
            min_cpus=body.min_cpus,
            min_memory_mib=body.min_memory_mib,
            state=TemplateState.NEW,  # no image until one is uploaded
        )
    )
    return Reply(template, 201, {"Location": f"/api/v1/templates/{template.id}"})


@api.delete(
    "/templates/{template_id}",
    status=204,
    summary="Delete a template",
    errors=(403, 404, 409),
)
async def delete_template(req: ApiRequest[None, None]) -> Reply:
    """By its tenant's users, or an admin; a public template by an admin only."""
    template = await _visible(req)
    principal = req.principal
    if principal.role is not Role.ADMIN and template.tenant_id != principal.tenant_id:
        raise ApiError(403, "forbidden", "only admins delete public or other tenants' templates")
    transition(TemplateOperation.DELETE, template.state, template.id)
    store = req.gateway.store
    library = req.gateway.images
    base = template.formats.get("qcow2")
    if library is not None and base is not None:
        users = await library.clone_users(template.datacenter_id, base)
        if users:
            raise Conflict(f"template {template.id} is in use by VMs {', '.join(users)}")
    await store.delete_charged(
        Template,
        template.id,
        expected_version=template.version,
        tenant_id=template.tenant_id,
        delta=quota_delta(template, 0),  # the template_gib its image held, given back
    )
    if req.gateway.images is not None:
        await _remove_files(store, req.gateway.images, template)
    return Reply(None, 204)


async def _remove_files(store: Store, library: ImageLibrary, template: Template) -> None:
    """The partial upload, and the library files no other template has (with the hosts' cached
    copies of them): a file is named by its content, so another template with the same
    checksum shares it (and its conversions)."""
    repo = library.repository(template.datacenter_id)
    await repo.discard_partial(template.id)
    if not template.checksum:
        return
    others = await store.list(
        Template, where={"checksum": template.checksum, "datacenter_id": template.datacenter_id}
    )
    if others.items:
        return
    for sha in {template.checksum, *template.formats.values()}:
        await repo.remove(sha)
        await library.evict(sha)  # the hosts' copies (no clone uses them: checked before)
