"""libvirt errors translated into cloudcore errors, by libvirt error code (never by message,
except where libvirt reports a name clash only in the message).

libvirt's default error handler prints every error to stderr; we replace it with one that does
nothing, because every error is raised (and logged by whoever handles it) anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import libvirt

from cloudcore.errors import (
    BackendUnavailable,
    CloudcoreError,
    Conflict,
    DriverError,
    IllegalTransition,
    NotFound,
    UnsupportedOperation,
)

__all__ = ["call_translated", "translate"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_SECRET,
    libvirt.VIR_ERR_NO_NETWORK,
}
_UNSUPPORTED = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
}
_UNAVAILABLE = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
}
# Errors of the client-side transport (socket closed, daemon gone), whatever their code:
# errors the daemon reports keep the domain of their origin (qemu, storage...).
_TRANSPORT_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}


def _ignore(_opaque: Any, _error: Any) -> None:
    pass


libvirt.registerErrorHandler(_ignore, None)


def translate(exc: Exception) -> CloudcoreError:
    """The cloudcore error for a libvirt error (raise it ``from exc``)."""
    if not isinstance(exc, libvirt.libvirtError):
        return DriverError(f"libvirt: {exc}")
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code in _NOT_FOUND:
        return NotFound(message)
    if code in _UNSUPPORTED:
        return UnsupportedOperation(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return IllegalTransition(message)
    if code == libvirt.VIR_ERR_DOM_EXIST or "already exists" in message:
        return Conflict(message)
    if code in _UNAVAILABLE or exc.get_error_domain() in _TRANSPORT_DOMAINS:
        return BackendUnavailable(f"libvirt: {message}")
    return DriverError(f"libvirt: {message}", code=_code_name(code))


def call_translated(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``fn`` and translate any libvirt error it raises."""
    try:
        return fn(*args, **kwargs)
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc


def _code_name(code: int | None) -> str | None:
    if code is None:
        return None
    for name, value in vars(libvirt).items():
        if name.startswith("VIR_ERR_") and value == code:
            return str(name)
    return str(code)
