"""Web console sessions: a login with an API token gives a session cookie; forms are
CSRF-checked.

The token never reaches the browser: the cookie holds only a random session id, ``HttpOnly``
(no script reads it), ``SameSite=Strict`` (no other site's page sends it), ``Secure`` when the
request came over TLS, limited to ``/ui``. Sessions are kept in the store (a grant, see
:meth:`cloudcore.store.base.Store.put_grant`) by the SHA-256 of the session id, holding the
SHA-256 of the token, so any API node serves a logged-in browser and a copy of the store logs
nobody in. Every request checks the token again through the gateway's token cache, so a
revoked token or a disabled user ends the session within ``api.token_cache_seconds``. Every
POST must carry the session's CSRF token (a form field or the ``X-CSRF-Token`` header, which
htmx sends), an HMAC of the session id that every node computes alike, and, when the browser
says where it came from (``Origin``), come from this origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from cloudcore.app.gateway.auth import Principal, TokenCache, hash_token
from cloudcore.store import Store

__all__ = ["COOKIE", "Session", "Sessions", "same_origin"]

COOKIE = "cc_session"
_KIND = "session"


class _Kept(msgspec.Struct, frozen=True, kw_only=True):
    """What the store keeps of a session: its token's SHA-256."""

    token_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: ``id`` is the cookie's secret, ``csrf`` its forms' token."""

    id: str
    token_hash: str

    @property
    def csrf(self) -> str:
        return hmac.new(self.id.encode(), b"cloudcore-ui-csrf", hashlib.sha256).hexdigest()


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """The logged-in browsers, in the store, by the SHA-256 of their session id."""

    def __init__(self, store: Store, lifetime: float) -> None:
        self.lifetime = lifetime
        self._store = store

    async def open(self, token: str) -> Session:
        session = Session(secrets.token_urlsafe(32), hash_token(token))
        expires = datetime.now(UTC) + timedelta(seconds=self.lifetime)
        kept = msgspec.json.encode(_Kept(token_hash=session.token_hash)).decode()
        await self._store.put_grant(_digest(session.id), _KIND, kept, expires)
        return session

    async def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        kept = await self._store.get_grant(_digest(session_id), _KIND)
        if kept is None:
            return None
        return Session(session_id, msgspec.json.decode(kept, type=_Kept).token_hash)

    async def close(self, session_id: str) -> None:
        await self._store.drop_grant(_digest(session_id), _KIND)

    async def current(
        self, request: web.Request, tokens: TokenCache
    ) -> tuple[Principal, Session] | None:
        """The caller behind the request's session cookie and its session, None when there is
        no live session or its token no longer works (the session is then closed)."""
        session = await self.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        principal = await tokens.principal_of_digest(session.token_hash)
        if principal is None:
            await self.close(session.id)
            return None
        return principal, session

    def set_cookie(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        response.set_cookie(
            COOKIE,
            session.id,
            path="/ui",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            max_age=int(self.lifetime),
        )

    @staticmethod
    def clear_cookie(response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path="/ui")

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(session.csrf, given)


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another origin (``Origin``, or else
    ``Sec-Fetch-Site``); True when it comes from here or says nothing (a non-browser client
    has no cookie to abuse)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        parts = urlsplit(origin)
        return parts.netloc == request.host and parts.scheme == request.scheme
    if origin == "null":
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
