"""Declaring an endpoint once: its route, the types of its body, query and reply, its doc.

Each route module builds its endpoints with an :class:`Api`::

    api = Api("vms")

    @api.post("/vms", body=VMCreate, reply=TaskView, status=202, summary="Create a VM")
    async def create_vm(req: ApiRequest[VMCreate, None]) -> Reply:
        ...

The same declaration serves three purposes: the aiohttp route, the validation of the request
(a body that is not JSON is a 400; one that does not fit ``body`` is a 422 naming the field; the
same for ``query`` parameters), and the OpenAPI document (:mod:`cloudcore.app.gateway.openapi`).
A handler returns a :class:`Reply`, or any msgspec-encodable value for a 200, or an aiohttp
``StreamResponse`` it has already prepared (Server-Sent Events).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
from aiohttp import web

from cloudcore.app.gateway.auth import ANONYMOUS, Principal, authenticate
from cloudcore.app.gateway.context import GATEWAY, PRINCIPAL, Gateway
from cloudcore.app.gateway.errors import ApiError, field_details
from cloudcore.app.gateway.idempotency import idempotent
from cloudcore.store.records import IdempotencyKey

__all__ = ["Api", "ApiRequest", "Handler", "Refine", "Reply", "Route", "encode"]

B = TypeVar("B")
Q = TypeVar("Q")

_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


@dataclass(slots=True)
class Reply:
    """A JSON reply: ``body`` is encoded with msgspec (None: no body)."""

    body: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ApiRequest(Generic[B, Q]):
    """What a handler gets: the caller, the decoded body and query, the path parameters."""

    raw: web.Request
    principal: Principal
    body: B
    query: Q
    params: Mapping[str, str]
    #: The Idempotency-Key this attempt holds (None: sent without one); a create records
    #: what it made against it in its own transaction (see :mod:`.idempotency`).
    idempotency: IdempotencyKey | None = None

    @property
    def gateway(self) -> Gateway:
        return self.raw.app[GATEWAY]


Handler = Callable[[ApiRequest[Any, Any]], Awaitable[Any]]
#: (the body's component schema, every component schema) -> None, editing them in place.
Refine = Callable[[dict[str, Any], dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type | None = None
    query: type | None = None
    reply: Any = None
    status: int = 200
    public: bool = False  # no token needed
    content_type: str = "application/json"
    errors: tuple[int, ...] = ()
    #: Called with the body's schema and every component, to say in the document what the
    #: body's type cannot (what a free-form field holds). Must describe what validation takes.
    refine: Refine | None = None

    @property
    def name(self) -> str:
        return self.handler.__name__


class Api:
    """The endpoints of one route module."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type | None = None,
        query: type | None = None,
        reply: Any = None,
        status: int = 200,
        public: bool = False,
        content_type: str = "application/json",
        errors: tuple[int, ...] = (),
        refine: Refine | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(
                    method,
                    path,
                    handler,
                    summary,
                    self.tag,
                    body,
                    query,
                    reply,
                    status,
                    public,
                    content_type,
                    errors,
                    refine,
                )
            )
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


def aiohttp_handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a declared handler: decode and validate, call, encode."""
    query_fields = frozenset(getattr(route.query, "__struct_fields__", ()))
    body_decoder: msgspec.json.Decoder[Any] | None = (
        msgspec.json.Decoder(route.body) if route.body is not None else None
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        if route.public:
            principal = ANONYMOUS
        else:
            gateway = request.app[GATEWAY]
            principal = await authenticate(
                request, gateway.tokens, gateway.limiter, gateway.failures
            )
        request[PRINCIPAL] = principal
        raw = await request.read() if body_decoder is not None or route.method == "POST" else b""

        async def respond(claim: IdempotencyKey | None) -> web.StreamResponse:
            body: Any = None
            if body_decoder is not None:
                body = _decode_body(body_decoder, raw)
            query: Any = None
            if route.query is not None:
                query = _decode_query(route.query, query_fields, request.query)
            result = await route.handler(
                ApiRequest(request, principal, body, query, request.match_info, claim)
            )
            return _response(route, result)

        if route.method == "POST" and not route.public:  # every POST creates or acts
            return await idempotent(request, principal, raw, respond)
        return await respond(None)

    handle.__name__ = route.name
    return handle


def _response(route: Route, result: Any) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    reply = result if isinstance(result, Reply) else Reply(result, route.status)
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers)
    return web.Response(
        body=encode(reply.body),
        status=reply.status,
        headers=reply.headers,
        content_type="application/json",
    )


def _decode_body(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    if not raw.strip():
        raw = b"{}"  # a body whose fields all have defaults may be left out
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        # Validation stops at the first bad field, before the end of the text is read: a body
        # that is not JSON at all (`{"name": "x"}}`) must say so, not name a missing field.
        _check_json(raw)
        raise ApiError(
            422, "invalid_body", f"the body is not valid: {exc}", field_details(str(exc))
        ) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None


def _check_json(raw: bytes) -> None:
    try:
        msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None


def _decode_query(kind: type, fields: frozenset[str], query: Mapping[str, str]) -> Any:
    unknown = sorted(set(query) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise ApiError(
            422,
            "invalid_query",
            f"unknown query parameter {unknown[0]!r} (allowed: {allowed})",
            {"parameter": unknown[0], "field": unknown[0], "reason": "unknown parameter"},
        )
    repeated = [key for key in fields if len(query.getall(key, [])) > 1]  # type: ignore[attr-defined]
    if repeated:
        raise ApiError(
            422,
            "invalid_query",
            f"query parameter {repeated[0]!r} is given twice",
            {"field": repeated[0], "reason": "given twice"},
        )
    try:
        return msgspec.convert(dict(query), kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("$.", "query parameter ")
        details = field_details(str(exc))
        got = query.get(str(details.get("field", "")))
        if got is not None:
            message += f" (got {got[:100]!r})"
        raise ApiError(
            422, "invalid_query", f"the query is not valid: {message}", details
        ) from None
