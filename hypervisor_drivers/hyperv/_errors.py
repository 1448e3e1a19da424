"""Hyper-V failures translated into cloudcore errors.

A script's error record (``FullyQualifiedErrorId``, category, message; see ``_script``) is
translated by category and by the id's first part; pywinrm's errors by kind: 401 is a refused
login, a WS-Man fault (HTTP 500) a failed operation, a connection error or timeout an unreachable
host. Output that is not the JSON the driver asked for is a malformed reply.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from xml.parsers.expat import ExpatError

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
)

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

__all__ = ["MALFORMED", "call_translated", "script_error", "translate"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
MALFORMED = "MALFORMED_REPLY"

_BY_CATEGORY: dict[str, type[CloudcoreError]] = {
    "ObjectNotFound": NotFound,
    "ResourceExists": Conflict,
    "ResourceUnavailable": InsufficientCapacity,
    "NotImplemented": UnsupportedOperation,
    "PermissionDenied": BackendUnavailable,
    "AuthenticationError": BackendUnavailable,
}
_BY_ID: dict[str, type[CloudcoreError]] = {
    "InvalidState": IllegalTransition,
    "OutOfMemory": InsufficientCapacity,
    "ObjectNotFound": NotFound,
}


def script_error(stderr: bytes, exit_code: int) -> CloudcoreError:
    """The cloudcore error for a script that exited ``exit_code`` with ``stderr``."""
    text = stderr.decode("utf-8", "replace").strip()
    try:
        record = json.loads(text)
        fqid, category = str(record["FullyQualifiedErrorId"]), str(record["Category"])
        message = str(record["Message"])
    except (ValueError, KeyError, TypeError):
        return DriverError(
            f"malformed reply from Hyper-V: exit code {exit_code} without an error record "
            f"(stderr: {text[:300]!r})",
            code=MALFORMED,
        )
    shown = f"Hyper-V {fqid} ({category}): {message}"
    cls = _BY_ID.get(fqid.partition(",")[0]) or _BY_CATEGORY.get(category)
    if cls is None:
        return DriverError(shown, code=fqid)
    return cls(shown)


def translate(exc: BaseException) -> CloudcoreError:
    """The cloudcore error for anything pywinrm or requests raised (raise it ``from exc``)."""
    if isinstance(exc, InvalidCredentialsError):
        return BackendUnavailable("the Hyper-V host refused the credentials (HTTP 401)")
    if isinstance(exc, WinRMOperationTimeoutError | requests.Timeout):
        return BackendUnavailable(f"the Hyper-V host did not answer in time: {exc!r}")
    if isinstance(exc, requests.ConnectionError):
        return BackendUnavailable(f"the Hyper-V host is unreachable: {exc!r}")
    if isinstance(exc, WinRMTransportError):
        return DriverError(f"WinRM fault from the Hyper-V host: {exc}", code=f"HTTP {exc.code}")
    if isinstance(exc, WinRMError):
        return DriverError(f"WinRM fault from the Hyper-V host: {exc}", code="WINRM")
    return DriverError(f"malformed reply from Hyper-V: {exc!r}", code=MALFORMED)


_TRANSLATED = (
    WinRMError,
    WinRMTransportError,
    WinRMOperationTimeoutError,
    requests.RequestException,
    ExpatError,
    ET.ParseError,
)


def call_translated(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``fn`` and translate any client error it raises."""
    try:
        return fn(*args, **kwargs)
    except CloudcoreError:
        raise
    except _TRANSLATED as exc:
        raise translate(exc) from exc
