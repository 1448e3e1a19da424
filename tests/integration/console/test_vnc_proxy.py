"""A real QEMU VM's VNC console through the gateway's WebSocket proxy: the RFB handshake as a
VNC client makes it, tenancy, single use, and the VM's state."""

from __future__ import annotations

import struct

import aiohttp
import pytest

from tests.component.gateway.conftest import ApiClient
from tests.integration.libvirt.conftest import virsh

pytestmark = pytest.mark.timeout(120)


async def _running_vm(api: ApiClient, who: str = "alice") -> str:
    r = await api.call(
        "POST",
        "/vms",
        who,
        {"name": "console", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 32},
    )
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"], timeout=90)
    assert task.error is None, task.error
    return str(r.body["subject"]).removeprefix("vm/")


async def exactly(ws: aiohttp.ClientWebSocketResponse, buffer: bytearray, size: int) -> bytes:
    """``size`` bytes of the RFB stream, whatever WebSocket messages carry them."""
    while len(buffer) < size:
        message = await ws.receive(timeout=30)
        assert message.type is aiohttp.WSMsgType.BINARY, message
        buffer.extend(message.data)
    chunk = bytes(buffer[:size])
    del buffer[:size]
    return chunk


async def rfb_handshake(ws: aiohttp.ClientWebSocketResponse) -> str:
    """RFC 6143 up to ServerInit (no authentication); returns the desktop's name."""
    buffer = bytearray()
    assert await exactly(ws, buffer, 12) == b"RFB 003.008\n"
    await ws.send_bytes(b"RFB 003.008\n")
    (count,) = await exactly(ws, buffer, 1)
    types = await exactly(ws, buffer, count)
    assert 1 in types, types  # None: QEMU listens on loopback only, without a password
    await ws.send_bytes(b"\x01")
    assert await exactly(ws, buffer, 4) == b"\x00\x00\x00\x00"  # SecurityResult: OK
    await ws.send_bytes(b"\x01")  # ClientInit, shared
    width, height = struct.unpack(">HH", await exactly(ws, buffer, 4))
    assert width > 0 and height > 0
    await exactly(ws, buffer, 16)  # the pixel format
    (length,) = struct.unpack(">I", await exactly(ws, buffer, 4))
    return (await exactly(ws, buffer, length)).decode()


async def test_the_console_url_speaks_rfb_with_the_vms_own_vnc_server(qemu_api: ApiClient) -> None:
    api = qemu_api
    vm_id = await _running_vm(api)
    assert virsh("domstate", f"cc-{vm_id}").stdout.strip() == "running"

    r = await api.call("GET", f"/vms/{vm_id}/console", "alice")
    assert r.status == 200, r.body
    assert r.body["protocol"] == "rfb" and r.body["url"].startswith("ws://127.0.0.1:")
    async with api.session.ws_connect(r.body["url"], protocols=("binary",)) as ws:
        assert ws.protocol == "binary"
        name = await rfb_handshake(ws)
    assert name == f"QEMU (cc-{vm_id})"  # QEMU names the desktop after the domain

    # Single use: the same URL again is refused before any upgrade.
    async with aiohttp.ClientSession() as fresh:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await fresh.ws_connect(r.body["url"])
    assert refused.value.status == 404


async def test_another_tenant_gets_no_console_and_a_stopped_vm_has_none(
    qemu_api: ApiClient,
) -> None:
    api = qemu_api
    vm_id = await _running_vm(api)
    r = await api.call("GET", f"/vms/{vm_id}/console", "bob")
    assert r.status == 404 and r.error_code == "not_found", r.body
    r = await api.call("GET", f"/vms/{vm_id}/console", None)
    assert r.status == 401

    # A plain GET of the URL (no upgrade) is refused and leaves the ticket unspent.
    r = await api.call("GET", f"/vms/{vm_id}/console", "alice")
    path = r.body["path"].removeprefix("/api/v1")
    plain = await api.call("GET", path, None)
    assert plain.status == 400 and "WebSocket" in plain.body["error"]["message"]
    async with api.session.ws_connect(r.body["url"]) as ws:
        assert (await ws.receive(timeout=30)).data[:12] == b"RFB 003.008\n"

    r = await api.call("POST", f"/vms/{vm_id}/stop", "alice", {"hard": True})
    assert r.status == 202, r.body
    assert (await api.wait_task(r.body["id"], timeout=60)).error is None
    r = await api.call("GET", f"/vms/{vm_id}/console", "alice")
    assert r.status == 409 and r.error_code == "illegal_transition", r.body
    assert "RUNNING or PAUSED" in r.body["error"]["message"]
