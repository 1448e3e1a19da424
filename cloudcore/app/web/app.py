"""Mounting the web console on the gateway: login and logout, the live stream, the front-end
packages (from ``ui.assets_dir``) and the console's own CSS and scripts."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from aiohttp import web

from cloudcore.app.gateway.context import GATEWAY
from cloudcore.app.web import operator, reports, resources, tenant
from cloudcore.app.web.context import SESSIONS, TEMPLATES, Ui, page, security_headers, templates
from cloudcore.app.web.session import COOKIE, Sessions, same_origin
from cloudcore.errors import BusClosed
from cloudcore.events import deduplicated

__all__ = ["add_web"]

_STATIC = Path(__file__).parent / "static"
#: What the console serves of each npm package: URL prefix -> the package's directory.
_PACKAGES = {"htmx": "htmx.org/dist", "htmx-sse": "htmx-ext-sse", "novnc": "@novnc/novnc"}
_KEEPALIVE = 15.0


def add_web(app: web.Application) -> None:
    gateway = app[GATEWAY]
    settings = gateway.settings.ui
    app[SESSIONS] = Sessions(gateway.store, settings.session_seconds)
    app[TEMPLATES] = templates()
    router = app.router
    router.add_get("/ui", _index)
    router.add_get("/ui/", _index)
    router.add_get("/ui/login", _login_page)
    router.add_post("/ui/login", _login)
    router.add_post("/ui/logout", page(_logout))
    router.add_get("/ui/stream", page(_stream))
    router.add_static("/ui/static", _STATIC, append_version=True)
    if settings.assets_dir:
        root = Path(settings.assets_dir)
        for prefix, package in _PACKAGES.items():
            if (root / package).is_dir():
                router.add_static(f"/ui/assets/{prefix}", root / package)
    tenant.add_routes(app)
    resources.add_routes(app)
    operator.add_routes(app)
    reports.add_routes(app)


async def _index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/ui/vms")


def _login_form(request: web.Request, error: str | None, status: int = 200) -> web.Response:
    text = request.app[TEMPLATES].get_template("login.html").render(error=error)
    return security_headers(web.Response(text=text, status=status, content_type="text/html"))


async def _login_page(request: web.Request) -> web.StreamResponse:
    return _login_form(request, None)


async def _login(request: web.Request) -> web.StreamResponse:
    """Check the token as the API would (failed attempts limited per client address); a
    session whose cookie holds only its random id."""
    if not same_origin(request):
        return web.Response(status=403, text="cross-site request refused")
    gateway = request.app[GATEWAY]
    address = request.remote or ""
    if await gateway.failures.wait_time(address, count=False) > 0:
        return _login_form(request, "Too many failed logins: wait a few seconds.", 429)
    form = await request.post()
    token = str(form.get("token", "")).strip()
    principal = await gateway.tokens.principal(token) if token else None
    if principal is None:
        await gateway.failures.wait_time(address)  # counts the failure
        return _login_form(request, "That token is unknown, revoked or expired.", 401)
    sessions = request.app[SESSIONS]
    old = request.cookies.get(COOKIE)
    if old:
        await sessions.close(old)  # a new login never reuses a session id (fixation)
    session = await sessions.open(token)
    response = web.HTTPSeeOther("/ui/vms")
    sessions.set_cookie(request, response, session)
    raise response


async def _logout(ui: Ui) -> web.StreamResponse:
    await ui.request.app[SESSIONS].close(ui.session.id)
    response = web.HTTPSeeOther("/ui/login")
    Sessions.clear_cookie(response)
    if ui.htmx:  # htmx follows a redirect in place: make it load the login page instead
        done = web.Response(status=200, headers={"HX-Redirect": "/ui/login"})
        Sessions.clear_cookie(done)
        return done
    raise response


async def _stream(ui: Ui) -> web.StreamResponse:
    """Server-Sent Events for the pages: for each event the caller may see, ``event: <kind>``
    (the type's first part: vm, task, host...) so a table reloads itself, then ``event:
    event`` carrying the event as a table row for the events page."""
    bus = ui.gateway.events
    subscription = bus.subscribe(tenant=ui.principal.scope())
    events = deduplicated(subscription)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(ui.request)
    await response.write(b": stream open\n\n")
    row = ui.request.app[TEMPLATES].get_template("_event_row.html")
    keepalive = asyncio.create_task(_keep_alive(response))
    try:
        async for event in events:
            html = " ".join(row.render(event=event).split())
            kind = event.type.partition(".")[0]
            await response.write(
                f"event: {kind}\ndata: {event.type}\n\nevent: event\ndata: {html}\n\n".encode()
            )
    except (ConnectionResetError, BusClosed):
        pass
    finally:
        keepalive.cancel()
        with contextlib.suppress(BaseException):
            await keepalive
        for iterator in (events, subscription):
            aclose: Any = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
    return response


async def _keep_alive(response: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionResetError):
        while True:
            await asyncio.sleep(_KEEPALIVE)
            await response.write(b": keep-alive\n\n")
