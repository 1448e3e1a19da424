"""A tenant's quotas: read by admins, operators and its members; set by admins. A resource
without a quota is unlimited."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from actors.quotas import QUOTA_RESOURCES
from cloudcore.app.gateway.api import Api, ApiRequest
from cloudcore.app.gateway.auth import require
from cloudcore.app.gateway.lookup import visible_tenant
from cloudcore.errors import InvalidRecord
from cloudcore.store.records import Quota, Role

__all__ = ["QuotaList", "QuotaSet", "api"]

api = Api("quotas")


class QuotaSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The most of the resource the tenant may hold; what it uses now is kept, even above."""

    maximum: Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class QuotaList(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    items: list[Quota]


async def _tenant_id(req: ApiRequest[Any, Any]) -> str:
    return (await visible_tenant(req)).id


@api.get(
    "/tenants/{tenant_id}/quotas",
    reply=QuotaList,
    summary="A tenant's quotas and usage",
    errors=(404,),
)
async def get_quotas(req: ApiRequest[None, None]) -> QuotaList:
    tenant_id = await _tenant_id(req)
    return QuotaList(tenant_id=tenant_id, items=await req.gateway.store.get_quotas(tenant_id))


@api.put(
    "/tenants/{tenant_id}/quotas/{resource}",
    body=QuotaSet,
    reply=Quota,
    summary="Set a tenant's quota of a resource (admin)",
    errors=(403, 404),
)
async def set_quota(req: ApiRequest[QuotaSet, None]) -> Quota:
    """``resource``: one of ``QUOTA_RESOURCES`` (vms, cpus, memory_mib, volumes, public_ips,
    template_gib)."""
    require(req.principal, Role.ADMIN)
    tenant_id = await _tenant_id(req)
    resource = req.params["resource"]
    if resource not in QUOTA_RESOURCES:
        raise InvalidRecord(f"resource: {resource!r} is not one of {', '.join(QUOTA_RESOURCES)}")
    return await req.gateway.store.set_quota(tenant_id, resource, req.body.maximum)
