"""Reading the records a request names: the one in its path (404 unless the caller may see it)
and the ones its body refers to (422 naming the field when they do not exist)."""

from __future__ import annotations

from typing import Any, TypeVar

from cloudcore.app.gateway.api import ApiRequest
from cloudcore.errors import InvalidRecord, NotFound
from cloudcore.store import Store
from cloudcore.store.records import Record, Tenant

__all__ = ["referenced", "visible", "visible_tenant"]

R = TypeVar("R", bound=Record)


async def visible(
    req: ApiRequest[Any, Any], kind: type[R], record_id: str, label: str, *, shared: bool = True
) -> R:
    """The record, if the caller may see it: its own tenant's, any for admins and operators,
    and one of no tenant when ``shared`` (a public template; a task of no tenant is not). A
    record the caller may not see is a 404 worded as for one that does not exist."""
    try:
        record = await req.gateway.store.get(kind, record_id)
    except NotFound:
        raise NotFound(f"{label} {record_id} not found") from None
    tenant_id = getattr(record, "tenant_id", None)
    principal = req.principal
    if not (
        principal.sees_all or tenant_id == principal.tenant_id or (shared and tenant_id is None)
    ):
        raise NotFound(f"{label} {record_id} not found")
    return record


async def visible_tenant(req: ApiRequest[Any, Any]) -> Tenant:
    """The tenant in the path, if the caller may see it: admins, operators and its members
    (for anyone else a 404, before the store is asked, so tenant ids cannot be probed)."""
    tenant_id = req.params["tenant_id"]
    if not (req.principal.sees_all or tenant_id == req.principal.tenant_id):
        raise NotFound(f"tenant {tenant_id} not found")
    try:
        return await req.gateway.store.get(Tenant, tenant_id)
    except NotFound:
        raise NotFound(f"tenant {tenant_id} not found") from None


async def referenced(store: Store, kind: type[R], record_id: str, field: str, label: str) -> R:
    """The record a body field refers to; InvalidRecord (422) naming the field if none."""
    try:
        return await store.get(kind, record_id)
    except NotFound:
        raise InvalidRecord(f"{field}: no {label} {record_id!r}") from None
