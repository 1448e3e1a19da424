"""One error body for every failure, and the one place that maps errors to HTTP statuses.

Every error reply is::

    {"error": {"code": "illegal_transition", "message": "...", "details": {...},
               "request_id": "..."}}

``code`` is stable (clients branch on it), ``message`` is for people and names what was wrong.
Only :class:`~cloudcore.errors.CloudcoreError` subclasses map to a 4xx or a 503: they are what the
platform means a client to see. Anything else (a bare ``ValueError`` from ``int("x")`` included)
is a bug: logged with its trace and the request id, and the client gets a 500 carrying that
request id and no trace. What msgspec refuses at the edge is translated there (400 for a body
that is not JSON, 422 naming the field), in :mod:`cloudcore.app.gateway.api`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from cloudcore.app.gateway.context import GATEWAY, REQUEST_ID
from cloudcore.errors import (
    ActorError,
    AddressesExhausted,
    AlreadyExists,
    AskTimeout,
    BackendUnavailable,
    BusClosed,
    CloudcoreError,
    Conflict,
    IllegalTransition,
    ImageRejected,
    InvalidMessage,
    InvalidRequest,
    MailboxFull,
    NotFound,
    PositionExpired,
    QuotaExceeded,
    UnsupportedOperation,
    VersionConflict,
)
from cloudcore.logging import get_logger

__all__ = [
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "error_middleware",
    "error_response",
    "explain",
    "field_details",
]

_log = get_logger("cloudcore.app.gateway")

#: Seconds a client is told to wait before retrying after a 503 or a 429.
RETRY_AFTER = 5


class ApiError(CloudcoreError):
    """An error the gateway itself raises, with its status and stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    request_id: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every 4xx and 5xx reply."""

    error: ErrorDetail


# Most specific first: the first class an error is an instance of decides.
_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (NotFound, 404, "not_found"),
    (IllegalTransition, 409, "illegal_transition"),
    (QuotaExceeded, 409, "quota_exceeded"),
    (AddressesExhausted, 409, "addresses_exhausted"),
    (AlreadyExists, 409, "already_exists"),
    (VersionConflict, 409, "version_conflict"),
    (PositionExpired, 409, "position_expired"),
    (Conflict, 409, "conflict"),
    (UnsupportedOperation, 409, "unsupported_operation"),
    (ImageRejected, 422, "image_rejected"),
    (InvalidRequest, 422, "invalid_value"),
    (InvalidMessage, 422, "invalid_message"),
    (MailboxFull, 503, "busy"),
    (AskTimeout, 503, "timeout"),
    (BackendUnavailable, 503, "backend_unavailable"),
    (ActorError, 503, "unavailable"),
    (BusClosed, 503, "unavailable"),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

_encoder = msgspec.json.Encoder()


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorBody(
        error=ErrorDetail(
            code=code,
            message=message,
            details=details or {},
            request_id=request.get(REQUEST_ID, ""),
        )
    )
    return web.Response(
        status=status,
        body=_encoder.encode(body),
        content_type="application/json",
        headers=headers,
    )


_AT = re.compile(r"^(?P<reason>.*) - at `\$\.?(?P<field>[^`]*)`$", re.DOTALL)
_NAMED = re.compile(
    r"^Object (?P<reason>missing required field|contains unknown field) `(?P<field>[^`]+)`$"
)
_PREFIXED = re.compile(
    r"^(?P<field>[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+|\[\d+\])*): (?P<reason>.+)$", re.DOTALL
)


def field_details(message: str) -> dict[str, Any]:
    """The field a validation message names and the reason, for an error body's ``details``:
    msgspec's "Expected `int`, got `str` - at `$.cpus`" and "Object missing required field
    `name`", and our own "field: reason". Empty if the message names no field."""
    for pattern in (_AT, _NAMED, _PREFIXED):
        found = pattern.match(message)
        if found is not None:
            return {"field": found["field"] or "(body)", "reason": found["reason"]}
    return {}


def explain(exc: CloudcoreError) -> tuple[int, str, str]:
    """The status, code and message an error gets in a reply (the web console shows them)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message
    status, code = _classify(exc) or (500, "internal_error")
    message = str(exc) if status < 500 else "the server failed to handle this request"
    return status, code, message


def _classify(exc: Exception) -> tuple[int, str] | None:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, code
    return None


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 413:
            limit = request.app[GATEWAY].settings.api.max_body_bytes
            message = f"the request body is larger than {limit} bytes"
        elif exc.status == 404:
            message = f"no endpoint {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(request, exc.status, code, message, headers=headers)
    except CloudcoreError as exc:
        return _domain_error(request, exc)
    except Exception:
        _log.exception(
            "api.internal_error",
            request_id=request.get(REQUEST_ID),
            method=request.method,
            path=request.path,
        )
        return error_response(
            request,
            500,
            "internal_error",
            "the server failed to handle this request; quote the request id when reporting it",
        )


def _domain_error(request: web.Request, exc: CloudcoreError) -> web.Response:
    status, code = _classify(exc) or (500, "internal_error")
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    if status == 500:
        _log.error(
            "api.unmapped_error",
            request_id=request.get(REQUEST_ID),
            error_type=type(exc).__name__,
            error=str(exc),
        )
        return error_response(request, 500, code, "the server failed to handle this request")
    details = field_details(str(exc)) if isinstance(exc, InvalidRequest) else None
    return error_response(request, status, code, str(exc), details, headers=headers)
