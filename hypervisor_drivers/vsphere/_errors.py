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

__all__ = ["FAULT_RULES", "TRANSPORT_ERRORS", "call_translated", "rule_for", "translate"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: What the transport raises when vCenter cannot be reached or replies with something else.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (OSError, http.client.HTTPException, ExpatError)

#: Each fault class and the cloudcore error it becomes. A fault takes the rule of its most
#: specific class in this table (its own class first, then its bases in MRO order).
FAULT_RULES: dict[type[Exception], type[CloudcoreError]] = {
    vmodl.fault.ManagedObjectNotFound: NotFound,
    vim.fault.NotFound: NotFound,
    vim.fault.FileNotFound: NotFound,
    vim.fault.InvalidState: IllegalTransition,
    vim.fault.InvalidPowerState: IllegalTransition,  # says which state it is in and needs
    vim.fault.DuplicateName: Conflict,
    vim.fault.AlreadyExists: Conflict,
    vim.fault.FileAlreadyExists: Conflict,
    vmodl.fault.NotSupported: UnsupportedOperation,
    vmodl.fault.NotImplemented: UnsupportedOperation,
    vmodl.fault.MethodNotFound: UnsupportedOperation,
    vim.fault.NotAuthenticated: BackendUnavailable,
    vim.fault.InvalidLogin: BackendUnavailable,
    vmodl.fault.HostCommunication: BackendUnavailable,
    vmodl.fault.RequestCanceled: BackendUnavailable,
}

_TRANSLATED: tuple[type[Exception], ...] = (vmodl.MethodFault, *TRANSPORT_ERRORS)


def _message(exc: BaseException) -> str:
    if isinstance(exc, vim.fault.InvalidPowerState):
        existing = exc.existingState or "in another power state"
        needed = exc.requestedState or "another power state"
        return f"the VM is {existing}; the operation needs it {needed}"
    msg = getattr(exc, "msg", None)
    if isinstance(msg, str) and msg:
        return msg
    return str(exc) or type(exc).__name__


def _fault_name(exc: BaseException) -> str:
    return type(exc).__name__.rpartition(".")[2]


def rule_for(exc: Exception) -> type[Exception] | None:
    """The most specific class of ``exc`` that :data:`FAULT_RULES` names, or None."""
    return next((cls for cls in type(exc).__mro__ if cls in FAULT_RULES), None)


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
    rule = rule_for(exc)
    if rule is None:
        return DriverError(message, code=_fault_name(exc))
    return FAULT_RULES[rule](message)


def call_translated(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``fn``; cloudcore errors pass through, every other error is translated."""
    try:
        return fn(*args, **kwargs)
    except CloudcoreError:
        raise
    except _TRANSLATED as exc:
        raise translate(exc) from exc
