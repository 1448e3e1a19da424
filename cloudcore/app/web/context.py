"""What a web console handler works with: the caller, its session, the rendering, and the
REST API's own handlers, called in-process so the pages show exactly what the API allows
(tenancy, validation and error messages are the API's, not copies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import jinja2
import msgspec
from aiohttp import web
from multidict import MultiDictProxy

from cloudcore.app.gateway.api import ApiRequest, Handler, Reply
from cloudcore.app.gateway.auth import Principal
from cloudcore.app.gateway.context import GATEWAY, PRINCIPAL, Gateway
from cloudcore.app.gateway.errors import explain
from cloudcore.app.web.session import Session, Sessions, same_origin
from cloudcore.errors import CloudcoreError
from cloudcore.store.records import Role

__all__ = [
    "SESSIONS",
    "TEMPLATES",
    "Failed",
    "Ui",
    "create",
    "form_body",
    "page",
    "security_headers",
]

SESSIONS = web.AppKey("ui_sessions", Sessions)
TEMPLATES = web.AppKey("ui_templates", jinja2.Environment)

#: No inline script or style, nothing from elsewhere; WebSockets to this origin (consoles).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def security_headers(response: web.Response) -> web.Response:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


class Failed(Exception):
    """An API call the page made was refused: its status, code and message, to show."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Ui:
    """One request of a logged-in browser."""

    def __init__(
        self, request: web.Request, principal: Principal, session: Session, form: Any
    ) -> None:
        self.request = request
        self.principal = principal
        self.session = session
        self.form: MultiDictProxy[Any] = form

    @property
    def gateway(self) -> Gateway:
        return self.request.app[GATEWAY]

    @property
    def operator(self) -> bool:
        return self.principal.role in (Role.ADMIN, Role.OPERATOR)

    @property
    def htmx(self) -> bool:
        return self.request.headers.get("HX-Request") == "true"

    async def call(
        self, handler: Handler, body: Any = None, query: Any = None, **params: str
    ) -> Any:
        """Run a REST handler as this caller; its value (Failed when it refuses)."""
        self.request[PRINCIPAL] = self.principal
        try:
            result = await handler(ApiRequest(self.request, self.principal, body, query, params))
        except CloudcoreError as exc:
            status, code, message = explain(exc)
            raise Failed(status, code, message) from None
        return result.body if isinstance(result, Reply) else result

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        env = self.request.app[TEMPLATES]
        text = env.get_template(template).render(
            me=self.principal,
            operator=self.operator,
            csrf=self.session.csrf,
            path=self.request.path,
            assets=bool(self.gateway.settings.ui.assets_dir),
            **context,
        )
        return security_headers(web.Response(text=text, status=status, content_type="text/html"))

    def flash(self, message: str, *, error: Failed | None = None) -> web.Response:
        """The outcome of an action: a fragment for htmx (an error keeps its status, so
        scripts and tests see it), or a page back where the form was for a plain browser."""
        if not self.htmx:
            back = self.request.headers.get("Referer", "/ui/vms")
            raise web.HTTPSeeOther(back if back.startswith(("/", "http")) else "/ui/vms")
        status = error.status if error is not None else 200
        return self.render("_flash.html", status=status, message=message, error=error)


T = TypeVar("T")


def form_body(raw: dict[str, Any], kind: type[T], what: str) -> T:
    """A form's fields as the API's body ``kind``; a 422 Failed naming the bad field."""
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("$.", "")
        raise Failed(422, "invalid_body", f"the {what} is not valid: {message}") from None


async def create(
    ui: Ui,
    what: str,
    raw: dict[str, Any],
    kind: type[T],
    handler: Handler,
    done: Callable[[T, Any], str],
) -> web.Response:
    """A create form's outcome: ``raw`` as the API's body ``kind`` given to ``handler``, then
    ``done(body, answer)`` as the message, or the refusal explained."""
    try:
        body = form_body(raw, kind, what)
        answer = await ui.call(handler, body=body)
    except Failed as exc:
        return ui.flash(f"Could not create the {what}: {exc.message}", error=exc)
    return ui.flash(done(body, answer))


PageHandler = Callable[[Ui], Awaitable[web.StreamResponse]]


def page(
    handler: PageHandler, *, operator: bool = False
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler for a page or action of a logged-in browser: no session sends it to
    the login page; a POST or PUT needs this origin and the session's CSRF token."""

    async def handle(request: web.Request) -> web.StreamResponse:
        sessions = request.app[SESSIONS]
        gateway = request.app[GATEWAY]
        current = await sessions.current(request, gateway.tokens)
        if current is None:
            if request.headers.get("HX-Request") == "true":
                return web.Response(status=401, headers={"HX-Redirect": "/ui/login"})
            raise web.HTTPSeeOther("/ui/login")
        principal, session = current
        form: Any = None
        if request.method in ("POST", "PUT"):  # a PUT's body is a file: its token in a header
            form = await request.post() if request.method == "POST" else {}
            given = request.headers.get("X-CSRF-Token") or form.get("csrf")
            if not same_origin(request) or not sessions.csrf_ok(session, given):
                return web.Response(status=403, text="cross-site request refused")
        ui = Ui(request, principal, session, form)
        if operator and not ui.operator:
            return ui.render("denied.html", status=403)
        return await handler(ui)

    handle.__name__ = handler.__name__
    return handle
