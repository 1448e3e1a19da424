"""XAPI failures translated into cloudcore errors, by XAPI error code (``ErrorDescription[0]``).

Besides ``XenAPI.Failure`` the client can fail at the transport (socket errors, timeouts: the pool
master is unreachable) or get a reply it cannot read (``xmlrpc.client.Fault`` 500 "Missing Status"
when the reply lacks XAPI's envelope, ``ResponseError``/``ExpatError`` when it is not XML-RPC):
those are a malformed reply, a ``DriverError`` that says so.
"""

from __future__ import annotations

import http.client
import xmlrpc.client
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from xml.parsers.expat import ExpatError

import XenAPI

from cloudcore.errors import (
    BackendUnavailable,
    CloudcoreError,
    Conflict,
    DriverError,
    IllegalTransition,
    InsufficientCapacity,
    NotFound,
    UnsupportedOperation,
)

__all__ = ["call_translated", "failure_code", "translate"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_NOT_FOUND = {"HANDLE_INVALID", "UUID_INVALID", "VM_NOT_A_SNAPSHOT"}
_ILLEGAL = {
    "VM_BAD_POWER_STATE",
    "OPERATION_NOT_ALLOWED",
    "VM_IS_TEMPLATE",
    "DEVICE_ALREADY_ATTACHED",
    "DEVICE_ALREADY_DETACHED",
    "VM_SHUTDOWN_TIMEOUT",
    "TASK_CANCELLED",
}
_CAPACITY = {"HOST_NOT_ENOUGH_FREE_MEMORY", "HOST_NOT_ENOUGH_PCPUS"}
_CONFLICT = {"DEVICE_ALREADY_EXISTS", "MAP_DUPLICATE_KEY", "VDI_IN_USE"}
_UNAVAILABLE = {
    "SESSION_AUTHENTICATION_FAILED",
    "SESSION_INVALID",
    "HOST_IS_SLAVE",
    "HOST_OFFLINE",
    "HOST_STILL_BOOTING",
}
_UNSUPPORTED = {"MESSAGE_METHOD_UNKNOWN", "VM_MIGRATE_FAILED_CROSS_POOL"}


def failure_code(exc: BaseException) -> str | None:
    """The XAPI error code of a ``XenAPI.Failure``, else None."""
    if isinstance(exc, XenAPI.Failure) and exc.details:
        return str(exc.details[0])
    return None


def _failure(exc: XenAPI.Failure) -> CloudcoreError:
    code = failure_code(exc) or "UNKNOWN"
    message = f"XAPI {code}: {', '.join(str(d) for d in exc.details[1:])}"
    if code in _NOT_FOUND:
        return NotFound(message)
    if code in _ILLEGAL:
        return IllegalTransition(message)
    if code in _CAPACITY:
        return InsufficientCapacity(message)
    if code in _CONFLICT:
        return Conflict(message)
    if code in _UNAVAILABLE:
        # Never echo the parameters of an authentication failure: they name the user.
        shown = "authentication failed" if code == "SESSION_AUTHENTICATION_FAILED" else message
        return BackendUnavailable(f"XenServer pool master refused the session: {shown}")
    if code in _UNSUPPORTED:
        return UnsupportedOperation(message)
    return DriverError(message, code=code)


def translate(exc: BaseException) -> CloudcoreError:
    """The cloudcore error for anything the XenAPI client raised (raise it ``from exc``)."""
    if isinstance(exc, XenAPI.Failure):
        return _failure(exc)
    if isinstance(exc, xmlrpc.client.Fault):
        return DriverError(
            f"malformed reply from the XAPI server: {exc.faultString}", code="MALFORMED_REPLY"
        )
    if isinstance(exc, ConnectionError):  # also http.client.RemoteDisconnected
        return BackendUnavailable(f"XenServer pool master unreachable: {exc!r}")
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return BackendUnavailable(f"XAPI HTTP error {exc.errcode} {exc.errmsg}")
    if isinstance(exc, xmlrpc.client.ResponseError | ExpatError | http.client.BadStatusLine):
        return DriverError(
            f"malformed reply from the XAPI server (not XML-RPC): {exc!r}", code="MALFORMED_REPLY"
        )
    if isinstance(exc, OSError | http.client.HTTPException):
        return BackendUnavailable(f"XenServer pool master unreachable: {exc!r}")
    return DriverError(f"XenAPI client: {exc!r}")


_TRANSLATED = (
    XenAPI.Failure,
    xmlrpc.client.Error,
    ExpatError,
    OSError,
    http.client.HTTPException,
)


def call_translated(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``fn`` and translate any client error it raises."""
    try:
        return fn(*args, **kwargs)
    except _TRANSLATED as exc:
        raise translate(exc) from exc
