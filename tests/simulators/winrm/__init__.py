"""A protocol-level WinRM (WS-Management) simulator written for these tests, with a simulated
Hyper-V host behind it. No Windows is involved.

HTTP on 127.0.0.1 with Basic auth (a wrong password is 401, as IIS/WinRM answers). The WS-Man
actions pywinrm's ``Protocol`` sends: ``transfer/Create`` (open a shell), ``shell/Command``,
``shell/Receive`` (base64 ``rsp:Stream``s, ``CommandState/Done`` and the exit code),
``shell/Signal`` and ``transfer/Delete``. An unknown shell is a SOAP fault with WS-Man's
``InvalidSelectors`` and HTTP 500. ``powershell -encodedcommand`` runs the decoded script through
the Hyper-V host's interpreter; ``hostname`` and ``echo`` run as cmd.exe would; other commands
can be given canned output (``commands``). pywinrm's own recorded exchanges replay against it
(``tests/unit/hypervisor_drivers/test_winrm_simulator.py``).

``WinRMServer.inject``: ``drop`` (close without a reply), ``slow`` (reply after ``delay``),
``malformed`` (the next command's stdout is not JSON), ``http500`` (a WS-Man fault).
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.simulators.winrm._hyperv import HyperVHost
from tests.simulators.winrm._powershell import Result

__all__ = ["HyperVHost", "WinRMServer", "running_winrm"]

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
_ENVELOPE = (
    '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault">'
    "<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{mid}</a:MessageID>"
    "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
    "<a:RelatesTo>{rel}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: bytes = b"") -> None:
        self.send_response(code)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        owner = self.server.owner
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/wsman":
            return self._reply(404)
        if self.headers.get("Authorization") != owner.authorization:
            return self._reply(401)
        fault = owner.take_fault()
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        if fault == "slow":
            time.sleep(owner.slow_delay)
        code, body = owner.handle(data, http500=fault == "http500")
        return self._reply(code, body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: WinRMServer


class WinRMServer:
    """A WS-Man endpoint at ``/wsman`` for one :class:`HyperVHost`."""

    def __init__(
        self,
        host: HyperVHost | None = None,
        *,
        username: str = "Administrator",
        password: str = "Passw0rd!",
        ids: Callable[[], str] | None = None,  # shell and command ids (golden tests fix them)
        port: int = 0,  # 0: a free one; a given port brings a server back where it was
    ) -> None:
        self.host = host or HyperVHost()
        self.authorization = "Basic " + _b64(f"{username}:{password}".encode())
        self.commands: dict[str, bytes] = {}  # canned cmd.exe output by command line
        self.shells: dict[str, dict[str, Result]] = {}
        self.slow_delay = 2.0
        self._ids = ids or (lambda: str(uuid.uuid4()).upper())
        self._faults: list[str] = []
        self._malformed = 0
        self._lock = threading.Lock()
        self._server = _HTTPServer(("127.0.0.1", port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/wsman"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> WinRMServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="winrm-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, kind: str, count: int = 1) -> None:
        assert kind in ("drop", "slow", "malformed", "http500")
        with self._lock:
            if kind == "malformed":  # applies to the next commands, not the next requests
                self._malformed += count
            else:
                self._faults.extend([kind] * count)

    def take_fault(self) -> str | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _take_malformed(self) -> bool:
        with self._lock:
            taken, self._malformed = self._malformed > 0, max(0, self._malformed - 1)
            return taken

    # -- WS-Man ------------------------------------------------------------------------------

    def handle(self, data: bytes, *, http500: bool) -> tuple[int, bytes]:
        root = ET.fromstring(data)
        action = root.findtext("s:Header/a:Action", namespaces=NS) or ""
        message_id = root.findtext("s:Header/a:MessageID", namespaces=NS) or ""
        selector = root.find("s:Header/w:SelectorSet/w:Selector[@Name='ShellId']", NS)
        shell_id = selector.text if selector is not None else None

        def envelope(reply_action: str, body: str) -> bytes:
            return _ENVELOPE.format(
                action=reply_action, mid=str(uuid.uuid4()), rel=message_id, body=body
            ).encode()

        if http500 or (shell_id is not None and shell_id not in self.shells):
            return 500, envelope(
                "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", self._fault(http500)
            )
        if action == f"{TRANSFER}/Create":
            shell = self._ids()
            self.shells[shell] = {}
            body = (
                "<x:ResourceCreated><a:Address>http://windows-host:5985/wsman</a:Address>"
                f"<a:ReferenceParameters><w:ResourceURI>{SHELL}/cmd</w:ResourceURI>"
                f'<w:SelectorSet><w:Selector Name="ShellId">{shell}</w:Selector>'
                "</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"
            )
            return 200, envelope(f"{TRANSFER}/CreateResponse", body)
        assert shell_id is not None
        if action == f"{SHELL}/Command":
            command = self._ids()
            self.shells[shell_id][command] = self._run(root, self._take_malformed())
            body = (
                f"<rsp:CommandResponse><rsp:CommandId>{command}</rsp:CommandId>"
                "</rsp:CommandResponse>"
            )
            return 200, envelope(f"{SHELL}/CommandResponse", body)
        if action == f"{SHELL}/Receive":
            stream = root.find(".//rsp:DesiredStream", NS)
            command = stream.get("CommandId", "") if stream is not None else ""
            return 200, envelope(f"{SHELL}/ReceiveResponse", self._receive(shell_id, command))
        if action == f"{SHELL}/Signal":
            signal = root.find(".//rsp:Signal", NS)
            if signal is not None:
                self.shells[shell_id].pop(signal.get("CommandId", ""), None)
            return 200, envelope(f"{SHELL}/SignalResponse", "<rsp:SignalResponse/>")
        if action == f"{TRANSFER}/Delete":
            self.shells.pop(shell_id, None)
            return 200, envelope(f"{TRANSFER}/DeleteResponse", "")
        return 500, envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", self._fault(True))

    @staticmethod
    def _fault(internal: bool) -> str:
        subcode, text, code = (
            ("w:InternalError", "The WS-Management service cannot process the request.", "1")
            if internal
            else (
                "w:InvalidSelectors",
                "The WS-Management service cannot process the request because the request "
                "contained invalid selectors for the resource.",
                "2150858843",
            )
        )
        return (
            f"<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>{subcode}"
            f'</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{text}'
            f'</s:Text></s:Reason><s:Detail><f:WSManFault Code="{code}" Machine="sim">'
            f"<f:Message>{text}</f:Message></f:WSManFault></s:Detail></s:Fault>"
        )

    def _run(self, root: ET.Element, malformed: bool) -> Result:
        command = root.findtext(".//rsp:CommandLine/rsp:Command", namespaces=NS) or ""
        args = [a.text or "" for a in root.findall(".//rsp:CommandLine/rsp:Arguments", NS)]
        line = " ".join([command.strip(), *args])
        if match := re.fullmatch(r"powershell -encodedcommand (\S+)", line, re.IGNORECASE):
            result = self.host.run(base64.b64decode(match.group(1)).decode("utf-16-le"))
        elif line in self.commands:
            result = Result(self.commands[line], b"", 0)
        elif line == "hostname":
            result = Result(f"{self.host.computer_name}\r\n".encode(), b"", 0)
        elif line.lower().startswith("echo "):
            result = Result(f"{line[5:]}\r\n".encode(), b"", 0)
        else:
            message = f"'{line.split()[0]}' is not recognized as an internal or external command"
            result = Result(b"", message.encode(), 1)
        if malformed:
            result = Result(b'{"Id": "truncated', b"", 0)
        return result

    def _receive(self, shell_id: str, command: str) -> str:
        result = self.shells[shell_id].get(command, Result(b"", b"", 0))
        streams = "".join(
            f'<rsp:Stream Name="{name}" CommandId="{command}">{_b64(data)}</rsp:Stream>'
            for name, data in (("stdout", result.stdout), ("stderr", result.stderr))
            if data
        )
        return (
            f"<rsp:ReceiveResponse>{streams}"
            f'<rsp:Stream Name="stdout" CommandId="{command}" End="true"></rsp:Stream>'
            f'<rsp:Stream Name="stderr" CommandId="{command}" End="true"></rsp:Stream>'
            f'<rsp:CommandState CommandId="{command}" State="{SHELL}/CommandState/Done">'
            f"<rsp:ExitCode>{result.exit_code}</rsp:ExitCode></rsp:CommandState>"
            "</rsp:ReceiveResponse>"
        )


@contextlib.contextmanager
def running_winrm(host: HyperVHost | None = None, **kwargs: Any) -> Iterator[WinRMServer]:
    server = WinRMServer(host, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
