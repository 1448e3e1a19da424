"""The WinRM simulator replays pywinrm's own recorded WS-Man exchanges (golden tests).

pywinrm's wheel ships ``winrm/tests/conftest.py`` with request/response pairs recorded from a
Windows host. Each recorded request is posted to the simulator as is; its reply must equal the
recorded one once both are read as XML with namespaces resolved, leaving out what is fresh in every
message (``MessageID``) and how output is chunked (the ``rsp:Stream`` pieces are joined per
stream). The constants are read with ``ast``: that conftest imports ``mock``, which is not needed.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import winrm
import xmltodict

from tests.simulators.winrm import HyperVHost, WinRMServer, running_winrm

SHELL_ID = "11111111-1111-1111-1111-111111111113"
A = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
S = "http://www.w3.org/2003/05/soap-envelope"
RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
AUTH = ("john.smith", "secret")  # the user the recording was made with


def _recorded() -> dict[str, str]:
    spec = importlib.util.find_spec("winrm")
    assert spec is not None and spec.submodule_search_locations
    source = Path(next(iter(spec.submodule_search_locations))) / "tests" / "conftest.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }


RECORDED = _recorded()


def _canonical(xml: str) -> dict[str, Any]:
    doc = xmltodict.parse(xml.strip(), process_namespaces=True)
    envelope = doc[f"{S}:Envelope"]
    header = {k: v for k, v in envelope[f"{S}:Header"].items() if k != f"{A}:MessageID"}
    body = envelope[f"{S}:Body"] or {}
    receive = body.get(f"{RSP}:ReceiveResponse") if isinstance(body, dict) else None
    if receive is not None:
        streams = receive[f"{RSP}:Stream"]
        joined: dict[str, bytes] = {}
        for stream in streams if isinstance(streams, list) else [streams]:
            data = base64.b64decode(stream.get("#text") or "")
            joined[stream["@Name"]] = joined.get(stream["@Name"], b"") + data
        state = receive[f"{RSP}:CommandState"]
        body = {"streams": joined, "state": state}
    return {"header": header, "body": body}


@pytest.fixture
def server() -> Iterator[WinRMServer]:
    ids = iter(
        [
            SHELL_ID,
            "11111111-1111-1111-1111-111111111114",
            "11111111-1111-1111-1111-111111111124",
        ]
    )
    with running_winrm(
        HyperVHost(), username=AUTH[0], password=AUTH[1], ids=lambda: next(ids)
    ) as s:
        yield s


def _post(server: WinRMServer, message: str) -> str:
    response = requests.post(
        server.url,
        data=message.encode(),
        auth=AUTH,
        headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.text


def test_the_recorded_exchanges_replay_in_order(server: WinRMServer) -> None:
    ipconfig = _canonical(RECORDED["get_cmd_output_response"])["body"]["streams"]["stdout"]
    server.commands["ipconfig /all"] = ipconfig  # cmd.exe's output cannot be simulated
    exchanges = [
        ("open_shell_request", "open_shell_response"),
        ("run_cmd_with_args_request", "run_cmd_ps_response", "1"),
        ("get_cmd_ps_output_request", "get_cmd_output_response", "1"),
        ("cleanup_cmd_request", "cleanup_cmd_response", "1"),
        ("run_ps_request", "run_cmd_ps_response", "2"),
        ("get_cmd_ps_output_request", "get_ps_output_response", "2"),
        ("cleanup_cmd_request", "cleanup_cmd_response", "2"),
        ("close_shell_request", "close_shell_response"),
    ]
    for request_name, response_name, *fill in exchanges:
        request, expected = RECORDED[request_name], RECORDED[response_name]
        if fill and "%s" in request:
            request = request % fill[0]
        if fill and "%s" in expected:
            expected = expected % fill[0]
        assert _canonical(_post(server, request)) == _canonical(expected), request_name
    assert server.shells == {}


def test_the_recorded_write_error_reaches_pywinrm_as_the_windows_message(
    server: WinRMServer,
) -> None:
    session = winrm.Session(
        server.url, auth=AUTH, transport="basic", ca_trust_path=None, proxy=None
    )
    result = session.run_ps('Write-Error "Error"')
    assert result.status_code == 1
    assert result.std_err.decode().startswith('Write-Error "Error" : Error')
    assert "FullyQualifiedErrorId : Microsoft.PowerShell.Commands.WriteErrorException" in (
        result.std_err.decode().replace(" \n   ", "")
    )


def test_an_unknown_shell_is_a_wsman_fault(server: WinRMServer) -> None:
    response = requests.post(
        server.url, data=RECORDED["close_shell_request"].encode(), auth=AUTH, timeout=5
    )
    assert response.status_code == 500
    assert "InvalidSelectors" in response.text


def test_a_wrong_password_is_401(server: WinRMServer) -> None:
    response = requests.post(
        server.url, data=RECORDED["open_shell_request"].encode(), auth=("x", "y"), timeout=5
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
