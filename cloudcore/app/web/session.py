"""Web console sessions: a login with an API token gives a session cookie; forms are
CSRF-checked.

The token stays in the server's memory, never in the browser: the cookie holds only a random
session id, ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends
it), ``Secure`` when the request came over TLS, limited to ``/ui``. Every request checks the
token again through the gateway's token cache, so a revoked token or a disabled user ends the
session within ``api.token_cache_seconds``. Every POST must carry the session's CSRF token
(a form field or the ``X-CSRF-Token`` header, which htmx sends) and, when the browser says
where it came from (``Origin``), come from this origin. Sessions live in the memory of the
node that logged in: behind several API nodes, route a browser to one (sticky sessions).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from cloudcore.app.gateway.auth import Principal, TokenCache

__all__ = ["COOKIE", "Session", "Sessions", "same_origin"]

COOKIE = "cc_session"
_MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    id: str
    token: str
    csrf: str
    expires: float


class Sessions:
    """The logged-in browsers of this node, by session id."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def open(self, token: str) -> Session:
        now = self._clock()
        if len(self._sessions) >= _MAX_SESSIONS:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            while len(self._sessions) >= _MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
        session = Session(
            secrets.token_urlsafe(32), token, secrets.token_urlsafe(32), now + self.lifetime
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session.id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def principal(self, request: web.Request, tokens: TokenCache) -> Principal | None:
        """The caller behind the request's session cookie, None when there is no live session
        or its token no longer works."""
        session = self.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        principal = await tokens.principal(session.token)
        if principal is None:
            self.close(session.id)
        return principal

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
