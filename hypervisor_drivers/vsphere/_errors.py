"""vSphere faults translated into cloudcore errors, by fault type (never by message).

pyvmomi raises a fault as an instance of its ``vim.fault.*`` or ``vmodl.fault.*`` class; the
transport raises ``OSError`` (refused, reset, timed out, TLS failures) or ``http.client`` errors,
and a reply that is not SOAP raises an XML parser error.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from xml.parsers.expat import ExpatError

from pyVmomi import vim, vmodl

from cloudcore.errors import (
    BackendUnavailable,
    CloudcoreError,
    Conflict,
    DriverError,
    IllegalTransition,
    NotFound,
    UnsupportedOperation,
)

__all__ = ["TRANSPORT_ERRORS", "call_translated", "translate"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: What the transport raises when vCenter cannot be reached or replies with something else.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (OSError, http.client.HTTPException, ExpatError)

_NOT_FOUND: tuple[type[Exception], ...] = (
    vmodl.fault.ManagedObjectNotFound,
    vim.fault.NotFound,
    vim.fault.FileNotFound,
)
_ILLEGAL: tuple[type[Exception], ...] = (vim.fault.InvalidPowerState, vim.fault.InvalidState)
_CONFLICT: tuple[type[Exception], ...] = (
    vim.fault.DuplicateName,
    vim.fault.AlreadyExists,
    vim.fault.FileAlreadyExists,
)
_UNSUPPORTED: tuple[type[Exception], ...] = (
    vmodl.fault.NotSupported,
    vmodl.fault.NotImplemented,
    vmodl.fault.MethodNotFound,
)
_UNAVAILABLE: tuple[type[Exception], ...] = (
    vim.fault.NotAuthenticated,
    vim.fault.InvalidLogin,
    vmodl.fault.HostCommunication,
    vmodl.fault.RequestCanceled,
)


_TRANSLATED: tuple[type[Exception], ...] = (vmodl.MethodFault, *TRANSPORT_ERRORS)


def _message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None)
    if isinstance(msg, str) and msg:
        return msg
    return str(exc) or type(exc).__name__


def _fault_name(exc: BaseException) -> str:
    return type(exc).__name__.rpartition(".")[2]


def translate(exc: Exception) -> CloudcoreError:
    """The cloudcore error for a pyvmomi fault or a transport error (raise it ``from exc``)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BackendUnavailable(
            f"vSphere: the server's TLS certificate failed verification ({exc.verify_message}); "
            "trust its CA with the driver setting ca_file, or set verify_tls=false for a "
            "simulator only"
        )
    if isinstance(exc, TRANSPORT_ERRORS):
        kind = "malformed reply" if isinstance(exc, ExpatError) else "unreachable"
        return BackendUnavailable(f"vSphere: {kind}: {type(exc).__name__}: {exc}")
    message = f"vSphere {_fault_name(exc)}: {_message(exc)}"
    if isinstance(exc, _NOT_FOUND):
        return NotFound(message)
    if isinstance(exc, _ILLEGAL):
        return IllegalTransition(message)
    if isinstance(exc, _CONFLICT):
        return Conflict(message)
    if isinstance(exc, _UNSUPPORTED):
        return UnsupportedOperation(message)
    if isinstance(exc, _UNAVAILABLE):
        return BackendUnavailable(message)
    return DriverError(message, code=_fault_name(exc))


def call_translated(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``fn``; cloudcore errors pass through, every other error is translated."""
    try:
        return fn(*args, **kwargs)
    except CloudcoreError:
        raise
    except _TRANSLATED as exc:
        raise translate(exc) from exc
