"""Tenants, their users, and API tokens.

Admins manage tenants and users; operators may read them; a user sees its own tenant. Anyone
asks who they are (``GET /users/me``) and manages their own tokens; an admin manages everyone's.
A token's secret is shown once, in the reply that issues it; its hash is never shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import hash_token, new_token, require
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.lookup import referenced, visible_tenant
from cloudcore.app.gateway.schemas import ListQuery
from cloudcore.errors import InvalidRecord, NotFound
from cloudcore.store.records import ApiToken, Page, Role, Tenant, User, new_id

__all__ = [
    "Me",
    "TenantCreate",
    "TokenCreate",
    "TokenIssued",
    "TokenPage",
    "TokenQuery",
    "TokenView",
    "UserCreate",
    "api",
]

api = Api("tenants")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
_Text = Annotated[str, msgspec.Meta(max_length=1000)]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class TenantCreate(_Body, frozen=True, kw_only=True):
    """A new tenant. ``id`` and ``name`` (default: the id) are unique."""

    id: _Id
    name: _Name | None = None
    description: _Text = ""


class UserCreate(_Body, frozen=True, kw_only=True):
    """A new user of the tenant; its name is unique in the tenant."""

    name: _Name
    email: Annotated[str, msgspec.Meta(max_length=320)] = ""
    role: Role = Role.USER


class Me(msgspec.Struct, frozen=True, kw_only=True):
    """The caller: its user, tenant and role, and the token it called with."""

    user_id: str
    name: str
    email: str
    tenant_id: str
    role: Role
    token_id: str


class TokenCreate(_Body, frozen=True, kw_only=True):
    """A new token for the caller; an admin may name another ``user_id``. ``expires_at``
    (with a time zone) null: it never expires."""

    name: _Text = ""
    user_id: _Id | None = None
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class TokenView(msgspec.Struct, frozen=True, kw_only=True):
    """A token without its secret or hash."""

    id: str
    tenant_id: str
    user_id: str
    name: str
    expires_at: datetime | None
    created_at: datetime


class TokenIssued(TokenView, frozen=True, kw_only=True):
    """A token just issued, with its ``secret``: shown this once, never again."""

    secret: str


class TokenPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[TokenView]
    next_cursor: str | None = None


class TokenQuery(ListQuery, frozen=True, kw_only=True):
    """``user_id``: only that user's tokens (admins)."""

    user_id: _Id | None = None


def _view(token: ApiToken) -> TokenView:
    return TokenView(
        id=token.id,
        tenant_id=token.tenant_id,
        user_id=token.user_id,
        name=token.name,
        expires_at=token.expires_at,
        created_at=token.created_at,
    )


# -- tenants ---------------------------------------------------------------------------------


@api.get(
    "/tenants", query=ListQuery, reply=Page[Tenant], summary="List tenants (admin)", errors=(403,)
)
async def list_tenants(req: ApiRequest[None, ListQuery]) -> Page[Tenant]:
    require(req.principal, Role.ADMIN)
    return await req.gateway.store.list(Tenant, after=req.query.cursor, limit=req.query.limit)


@api.post(
    "/tenants",
    body=TenantCreate,
    reply=Tenant,
    status=201,
    summary="Create a tenant (admin)",
    errors=(403, 409),
)
async def create_tenant(req: ApiRequest[TenantCreate, None]) -> Reply:
    require(req.principal, Role.ADMIN)
    body = req.body
    tenant = await req.gateway.store.create(
        Tenant(id=body.id, name=body.name or body.id, description=body.description)
    )
    return Reply(tenant, 201, {"Location": f"/api/v1/tenants/{tenant.id}"})


@api.get("/tenants/{tenant_id}", reply=Tenant, summary="Get a tenant", errors=(404,))
async def get_tenant(req: ApiRequest[None, None]) -> Tenant:
    """Admins and operators see every tenant; a user its own (another one is a 404)."""
    return await visible_tenant(req)


# -- users -----------------------------------------------------------------------------------


@api.get(
    "/tenants/{tenant_id}/users",
    query=ListQuery,
    reply=Page[User],
    summary="List a tenant's users (admin, operator)",
    errors=(403, 404),
)
async def list_users(req: ApiRequest[None, ListQuery]) -> Page[User]:
    require(req.principal, Role.ADMIN, Role.OPERATOR)
    tenant = await visible_tenant(req)
    q = req.query
    return await req.gateway.store.list(
        User, where={"tenant_id": tenant.id}, after=q.cursor, limit=q.limit
    )


@api.post(
    "/tenants/{tenant_id}/users",
    body=UserCreate,
    reply=User,
    status=201,
    summary="Create a user of a tenant (admin)",
    errors=(403, 404, 409),
)
async def create_user(req: ApiRequest[UserCreate, None]) -> Reply:
    """409 if the tenant already has a user of that name. Issue it a token with
    ``POST /tokens`` and its ``user_id``."""
    require(req.principal, Role.ADMIN)
    tenant = await visible_tenant(req)
    body = req.body
    user = await req.gateway.store.create(
        User(
            id=new_id("usr-"), tenant_id=tenant.id, name=body.name, email=body.email, role=body.role
        )
    )
    return Reply(user, 201)


@api.get("/users/me", reply=Me, summary="Who am I")
async def who_am_i(req: ApiRequest[None, None]) -> Me:
    principal = req.principal
    user = await req.gateway.store.get(User, principal.user_id)
    return Me(
        user_id=user.id,
        name=user.name,
        email=user.email,
        tenant_id=user.tenant_id,
        role=user.role,
        token_id=principal.token_id,
    )


# -- tokens ----------------------------------------------------------------------------------


async def _visible_token(req: ApiRequest[Any, Any]) -> ApiToken:
    """The token in the path if it is the caller's own, or the caller is an admin (else 404)."""
    token_id = req.params["token_id"]
    try:
        token = await req.gateway.store.get(ApiToken, token_id)
    except NotFound:
        token = None
    if token is None or (
        req.principal.role is not Role.ADMIN and token.user_id != req.principal.user_id
    ):
        raise NotFound(f"token {token_id} not found")
    return token


@api.post(
    "/tokens",
    body=TokenCreate,
    reply=TokenIssued,
    status=201,
    summary="Issue an API token",
    errors=(403,),
)
async def create_token(req: ApiRequest[TokenCreate, None]) -> Reply:
    """For the caller, or (admins) for ``user_id``. The reply carries the secret, once."""
    body, store, principal = req.body, req.gateway.store, req.principal
    user_id = body.user_id or principal.user_id
    if user_id != principal.user_id and principal.role is not Role.ADMIN:
        raise ApiError(403, "forbidden", "only admins issue tokens for another user")
    user = await referenced(store, User, user_id, "user_id", "user")
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise InvalidRecord("expires_at: the time is already past")
    secret = new_token()
    token = await store.create(
        ApiToken(
            id=new_id("tok-"),
            tenant_id=user.tenant_id,
            user_id=user.id,
            name=body.name,
            token_hash=hash_token(secret),
            expires_at=body.expires_at,
        )
    )
    issued = TokenIssued(**msgspec.structs.asdict(_view(token)), secret=secret)
    return Reply(issued, 201, {"Location": f"/api/v1/tokens/{token.id}"})


@api.get("/tokens", query=TokenQuery, reply=TokenPage, summary="List API tokens")
async def list_tokens(req: ApiRequest[None, TokenQuery]) -> TokenPage:
    """The caller's own tokens; an admin's: everyone's (``user_id`` narrows it)."""
    q, principal = req.query, req.principal
    if principal.role is Role.ADMIN:
        where = {} if q.user_id is None else {"user_id": q.user_id}
    elif q.user_id not in (None, principal.user_id):
        return TokenPage(items=[])
    else:
        where = {"user_id": principal.user_id}
    page = await req.gateway.store.list(ApiToken, where=where, after=q.cursor, limit=q.limit)
    return TokenPage(items=[_view(t) for t in page.items], next_cursor=page.next_cursor)


@api.get("/tokens/{token_id}", reply=TokenView, summary="Get an API token", errors=(404,))
async def get_token(req: ApiRequest[None, None]) -> TokenView:
    return _view(await _visible_token(req))


@api.delete("/tokens/{token_id}", status=204, summary="Revoke an API token", errors=(404,))
async def revoke_token(req: ApiRequest[None, None]) -> Reply:
    """Its own, or (admins) anyone's. It stops working on this node at once, on others within
    ``api.token_cache_seconds``."""
    token = await _visible_token(req)
    await req.gateway.store.delete(ApiToken, token.id)
    req.gateway.tokens.forget()
    return Reply(None, 204)
