"""Who is calling, and what they may see: bearer tokens, roles, tenant scoping, rate limits.

A token is ``cc_`` followed by 43 URL-safe characters (256 random bits). The store keeps only
its SHA-256 (a token is as random as a key, so a slow password hash would add nothing but
latency); the secret is shown once, when the token is issued.

Rules (:class:`~cloudcore.store.records.Role`):

- ``ADMIN`` sees and does everything, in every tenant.
- ``OPERATOR`` sees and operates every tenant's VMs, hosts, datacenters and tasks; it does not
  manage tenants, users or quotas.
- ``USER`` sees and touches its own tenant's resources only. Another tenant's resource is
  answered 404, exactly as one that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web

from cloudcore.app.gateway.ratelimits import RateLimiter
from cloudcore.errors import NotFound
from cloudcore.store import Store
from cloudcore.store.records import ApiToken, Role, User

__all__ = [
    "ANONYMOUS",
    "Principal",
    "TokenCache",
    "authenticate",
    "hash_token",
    "new_token",
    "require",
    "tenant_filter",
]

TOKEN_PREFIX = "cc_"

V = TypeVar("V")


def new_token() -> str:
    """A new token secret."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request."""

    user_id: str
    tenant_id: str
    role: Role
    token_id: str

    @property
    def sees_all(self) -> bool:
        """Admins and operators see every tenant."""
        return self.role is not Role.USER

    def scope(self) -> str | None:
        """The tenant a listing is limited to (None: all)."""
        return None if self.sees_all else self.tenant_id


def tenant_filter(principal: Principal, requested: str | None) -> dict[str, object] | None:
    """The ``where`` that limits a listing to what the caller may see and asked for: a user's
    own tenant (None when it asked for another: an empty listing), the requested tenant for
    admins and operators, or no filter."""
    scope = principal.scope()
    if scope is not None:
        return {"tenant_id": scope} if requested in (None, scope) else None
    return {} if requested is None else {"tenant_id": requested}


def require(principal: Principal, *roles: Role) -> None:
    """403 unless the caller has one of ``roles``."""
    from cloudcore.app.gateway.errors import ApiError

    if principal.role not in roles:
        names = " or ".join(r.value.lower() for r in roles)
        raise ApiError(403, "forbidden", f"this needs the {names} role; you are {principal.role}")


class TokenCache:
    """Tokens checked recently, so most requests cost no store round trip. A revoked or
    expired token, or a disabled user, stops working within ``ttl`` seconds. A token the store
    does not know is remembered as unknown for ``unknown_ttl`` seconds (a client retrying a
    wrong token costs one query, not one a request); :meth:`forget` drops both."""

    #: Entries kept at most of each kind; past it the kind starts afresh.
    MAX_ENTRIES = 10_000

    def __init__(self, store: Store, ttl: float, unknown_ttl: float = 2.0) -> None:
        self._store = store
        self._ttl = ttl
        self._unknown_ttl = min(ttl, unknown_ttl)
        self._known: dict[str, tuple[Principal, float, datetime | None]] = {}
        self._unknown: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[Principal | None]] = {}
        #: Store lookups made (what the caches save is measured against it).
        self.lookups = 0

    async def principal(
        self, secret: str, admit: Callable[[], Awaitable[None]] | None = None
    ) -> Principal | None:
        """The principal of the token ``secret``, None if it is unknown, revoked or expired.
        ``admit`` is called before a store lookup (not on a cache hit, nor when the same token
        is being looked up already: that lookup answers) and may refuse it by raising."""
        return await self.principal_of_digest(hash_token(secret), admit)

    async def principal_of_digest(
        self, digest: str, admit: Callable[[], Awaitable[None]] | None = None
    ) -> Principal | None:
        """As :meth:`principal`, for a token known by its SHA-256 (what a web session keeps)."""
        now = time.monotonic()
        hit = self._known.get(digest)
        if hit is not None and hit[1] > now:
            principal, _, expires = hit
            if expires is None or expires > datetime.now(UTC):
                return principal
            return None
        if self._unknown.get(digest, 0.0) > now:
            return None
        running = self._running.get(digest)
        if running is not None:
            # The same token, already being looked up (many requests of a client that has
            # just started): one lookup answers them all, and only it was admitted.
            return await asyncio.shield(running)
        if admit is not None:
            await admit()
        task = asyncio.get_running_loop().create_task(self._resolve(digest, now))
        self._running[digest] = task
        task.add_done_callback(lambda _: self._running.pop(digest, None))
        return await asyncio.shield(task)

    async def _resolve(self, digest: str, now: float) -> Principal | None:
        self.lookups += 1
        found = await self._lookup(digest)
        if found is None:
            self._known.pop(digest, None)
            _remember(self._unknown, digest, now + self._unknown_ttl)
            return None
        self._unknown.pop(digest, None)
        _remember(self._known, digest, (found[0], now + self._ttl, found[1]))
        return found[0]

    async def _lookup(self, digest: str) -> tuple[Principal, datetime | None] | None:
        page = await self._store.list(ApiToken, where={"token_hash": digest}, limit=1)
        if not page.items:
            return None
        token = page.items[0]
        if token.expires_at is not None and token.expires_at <= datetime.now(UTC):
            return None
        try:
            user = await self._store.get(User, token.user_id)
        except NotFound:
            return None
        if user.disabled:
            return None
        principal = Principal(user.id, user.tenant_id, user.role, token.id)
        return principal, token.expires_at

    def forget(self) -> None:
        """Drop every cached token, known or unknown (after a revocation or an issue, to make
        it take effect at once here)."""
        self._known.clear()
        self._unknown.clear()


def _remember(entries: dict[str, V], key: str, value: V) -> None:
    if len(entries) >= TokenCache.MAX_ENTRIES:
        entries.clear()
    entries[key] = value


#: The caller of a public endpoint (no token): sees nothing of any tenant.
ANONYMOUS = Principal(user_id="", tenant_id="", role=Role.USER, token_id="")


async def authenticate(
    request: web.Request,
    tokens: TokenCache,
    limiter: RateLimiter,
    failures: RateLimiter | None = None,
) -> Principal:
    """The caller named by the request's bearer token; 401 without a valid one, 429 when the
    token is over its rate, or when the client's address has failed to authenticate more often
    than ``failures`` allows (then no lookup is made: guessing tokens costs the store nothing
    and gets nowhere fast)."""
    from cloudcore.app.gateway.errors import ApiError

    address = request.remote or ""
    if failures is not None:
        _refuse_if_over(await failures.wait_time(address, count=False), "failed authentications")

    admitted: list[bool] = []

    async def admit() -> None:
        # A lookup may fail: it takes a failure's place up front (concurrent guesses cannot
        # all pass the check above) and gives it back if the token is good.
        if failures is not None:
            _refuse_if_over(await failures.wait_time(address), "failed authentications")
            admitted.append(True)

    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="cloudcore"'}
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(
            401,
            "unauthorized",
            "this needs an API token: send the header 'Authorization: Bearer <token>'",
            headers=challenge,
        )
    try:
        principal = await tokens.principal(secret.strip(), admit)
    except BaseException:
        # The store could not answer (an outage, a cancelled request): no failed
        # authentication, so the slot taken up front is given back.
        if failures is not None and admitted:
            await failures.refund(address)
        raise
    if principal is None:
        raise ApiError(
            401, "unauthorized", "the API token is unknown, revoked or expired", headers=challenge
        )
    if failures is not None and admitted:
        await failures.refund(address)
    _refuse_if_over(await limiter.wait_time(principal.token_id), "requests with this token")
    return principal


def _refuse_if_over(wait: float, what: str) -> None:
    from cloudcore.app.gateway.errors import RETRY_AFTER, ApiError

    if wait > 0:
        retry = max(1, min(RETRY_AFTER, int(wait + 0.999)))
        raise ApiError(
            429,
            "rate_limited",
            f"too many {what}; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )
