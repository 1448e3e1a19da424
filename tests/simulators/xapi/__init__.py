"""A protocol-level XenServer (XAPI) simulator written for these tests: XML-RPC over HTTP on
127.0.0.1, answering the real ``XenAPI.Session`` with XAPI's ``{"Status": "Success", "Value": ...}``
and ``{"Status": "Failure", "ErrorDescription": [code, ...]}`` envelopes. No real XenServer is
involved; the model (``_model.Xapi``) keeps state and refuses what XAPI refuses.

``XapiServer.inject`` makes the next matching calls fail at the wire: ``drop`` (the connection is
closed without a reply), ``slow`` (the reply comes after ``delay`` seconds), ``malformed`` (a
well-formed XML-RPC reply without XAPI's envelope), ``garbage`` (a body that is not XML).
"""

from __future__ import annotations

import contextlib
import hashlib
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from tests.simulators.xapi._model import Xapi
from tests.simulators.xapi._store import XapiError

__all__ = ["Xapi", "XapiError", "XapiServer", "running_xapi"]


@dataclass
class _Fault:
    kind: str
    method: str | None
    count: int
    delay: float


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/", "/RPC2")

    def do_POST(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        fault = server.owner._take_fault(body)
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        if fault is not None and fault.kind in ("malformed", "garbage"):
            reply = (
                b"<html>502 Bad Gateway</html>"
                if fault.kind == "garbage"
                else b"<?xml version='1.0'?><methodResponse><params><param><value><string>"
                b"not an envelope</string></value></param></params></methodResponse>"
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        # Hand the body we already read to the standard XML-RPC machinery.
        response = server._marshaled_dispatch(body, getattr(self, "_dispatch", None), self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(response)))
        self.end_headers()
        self.wfile.write(response)

    def do_PUT(self) -> None:
        """XAPI's ``/import_raw_vdi?vdi=REF&format=vhd|raw&session_id=S``: the body becomes the
        VDI's content. A VHD must end with a footer (the ``conectix`` cookie) declaring the
        VDI's virtual size, as XAPI checks; the content is kept as its sha256 and length."""
        server: _Server = self.server  # type: ignore[assignment]
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        length = int(self.headers.get("Content-Length", 0))
        digest, tail, left = hashlib.sha256(), b"", length
        while left:
            block = self.rfile.read(min(left, 1 << 20))
            if not block:
                break
            digest.update(block)
            tail = (tail + block)[-512:]
            left -= len(block)
        status, reason = server.owner.xapi.import_vdi(
            url.path, query, length - left, digest.hexdigest(), tail
        )
        self.send_response(status, reason)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: XapiServer


class XapiServer:
    """The XML-RPC endpoint of a :class:`Xapi` pool, on a free loopback port."""

    def __init__(self, xapi: Xapi | None = None, *, port: int = 0) -> None:
        """``port`` 0 takes a free one; a given port brings a pool master back where it was."""
        self.xapi = xapi or Xapi()
        self._server = _Server(("127.0.0.1", port), _Handler, allow_none=True, logRequests=False)
        self._server.owner = self
        self._server.register_instance(self)
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> XapiServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="xapi-sim"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def inject(
        self, kind: str, *, method: str | None = None, count: int = 1, delay: float = 2.0
    ) -> None:
        """Make the next ``count`` calls (of ``method`` only, when given) fail as ``kind``."""
        assert kind in ("drop", "slow", "malformed", "garbage")
        with self._lock:
            self._faults.append(_Fault(kind, method, count, delay))

    def _take_fault(self, body: bytes) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method is None or f"<methodName>{fault.method}<" in body.decode():
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        try:
            value = self.xapi.call(method, list(params))
        except XapiError as exc:
            return {"Status": "Failure", "ErrorDescription": exc.description}
        return {"Status": "Success", "Value": value}


@contextlib.contextmanager
def running_xapi(xapi: Xapi | None = None, *, port: int = 0) -> Iterator[XapiServer]:
    server = XapiServer(xapi, port=port).start()
    try:
        yield server
    finally:
        server.stop()
