"""Dropped connections told from lost sessions: reads retried on a fresh connection.

A server may close one HTTP connection without replying (vcsim does whenever a request handler
panics, e.g. ``SearchIndex.FindChild`` while another ``CreateVM_Task`` has put a still nameless
VM in the folder). pyvmomi then drops its pooled connections and raises
``http.client.RemoteDisconnected``; the session itself lives on. So every request that is safe to
repeat (a read: :data:`SAFE_METHODS`, property reads included) is retried, a bounded number of
times, on a fresh connection; every other request (a task started, a guest asked to shut down)
is not, and its error reaches the driver, which then checks the session before it gives it up.

Every dropped request is logged with its SOAP method (``hypervisor.request_dropped``).
"""

from __future__ import annotations

import http.client
import ssl
import time
from typing import Any

import structlog

__all__ = ["ATTEMPTS", "DROPPED", "SAFE_METHODS", "retry_reads"]

_log = structlog.get_logger("hypervisor_drivers.vsphere")

#: What the transport raises when the server closed the connection under a request (not a
#: refused connection, a timeout or a TLS failure: retrying those only delays the verdict).
DROPPED: tuple[type[Exception], ...] = (
    ConnectionResetError,  # http.client.RemoteDisconnected is one
    ConnectionAbortedError,
    BrokenPipeError,
    http.client.BadStatusLine,
    http.client.IncompleteRead,
    ssl.SSLEOFError,  # closed during the TLS handshake of the fresh connection
)

#: SOAP methods that only read: repeating one is harmless. ``Fetch`` is pyvmomi's attribute
#: read. Not ``ContinueRetrievePropertiesEx`` (its token is used up) nor ``WaitForUpdatesEx``.
SAFE_METHODS = frozenset(
    {
        "Fetch",
        "FindByUuid",
        "FindChild",
        "RetrieveContents",
        "RetrieveProperties",
        "RetrievePropertiesEx",
        "CurrentTime",
    }
)

ATTEMPTS = 3  # the first try and two retries
_BACKOFF = (0.05, 0.2)  # seconds before each retry


def _method(info: Any) -> str:
    return str(getattr(info, "wsdlName", None) or getattr(info, "name", "?"))


def retry_reads(stub: Any) -> None:
    """Make ``stub`` (a pyvmomi ``SoapStubAdapter``) retry the :data:`SAFE_METHODS` dropped by
    the server, :data:`ATTEMPTS` tries at most, each on a new connection."""
    invoke = stub.InvokeMethod

    def invoke_method(mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
        method = _method(info)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return invoke(mo, info, args, outerStub)
            except DROPPED as exc:
                retry = method in SAFE_METHODS and attempt < ATTEMPTS
                _log.warning(
                    "hypervisor.request_dropped",
                    method=method,
                    object=getattr(mo, "_moId", None),
                    error=type(exc).__name__,
                    attempt=attempt,
                    retrying=retry,
                )
                if not retry:
                    raise
                time.sleep(_BACKOFF[attempt - 1])  # pyvmomi dropped its pool: a new connection
        raise AssertionError("unreachable")  # pragma: no cover

    stub.InvokeMethod = invoke_method
