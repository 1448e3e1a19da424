"""A real QEMU VM's serial console through the gateway's WebSocket relay: what the firmware
wrote on the serial port reaches the client; one session per serial port at a time."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from tests.component.gateway.conftest import ApiClient
from tests.integration.console.test_vnc_proxy import _running_vm

pytestmark = pytest.mark.timeout(180)
#: Seconds to wait for the firmware's greeting: its boot retry comes every 5 s (the driver sets it).
_GREETING = 30.0


async def _until(ws: aiohttp.ClientWebSocketResponse, wanted: bytes, timeout: float) -> bytes:
    seen = bytearray()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while wanted not in seen:
                message = await ws.receive()
                assert message.type is aiohttp.WSMsgType.BINARY, message
                seen.extend(message.data)
    return bytes(seen)


async def test_the_serial_console_shows_what_the_vm_writes_on_its_serial_port(
    qemu_api: ApiClient,
) -> None:
    api = qemu_api
    vm_id = await _running_vm(api)
    r = await api.call("GET", f"/vms/{vm_id}/console?kind=serial", "alice")
    assert r.status == 200, r.body
    assert (r.body["kind"], r.body["protocol"]) == ("serial", "raw")
    async with api.session.ws_connect(r.body["url"]) as ws:
        # A second session on the same serial port is refused while this one is open.
        second = await api.call("GET", f"/vms/{vm_id}/console?kind=serial", "alice")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await api.session.ws_connect(second.body["url"])
        assert refused.value.status == 409

        # The firmware (SeaBIOS, with useserial) greets on the serial port at each boot: the
        # one at boot if the terminal kept it, else the next, when SeaBIOS finds no bootable
        # disk and resets the VM itself (every 5 s, as the driver sets it).
        seen = await _until(ws, b"Machine UUID " + vm_id.encode(), timeout=_GREETING)
    assert b"SeaBIOS" in seen

    # Closed: the port is free for the next session.
    r = await api.call("GET", f"/vms/{vm_id}/console?kind=serial", "alice")
    async with api.session.ws_connect(r.body["url"]) as ws:
        assert not ws.closed


async def test_a_serial_console_of_another_tenants_vm_is_404(qemu_api: ApiClient) -> None:
    vm_id = await _running_vm(qemu_api)
    r = await qemu_api.call("GET", f"/vms/{vm_id}/console?kind=serial", "bob")
    assert r.status == 404, r.body
    r = await qemu_api.call("GET", f"/vms/{vm_id}/console?kind=telnet", "alice")
    assert r.status == 422 and r.body["error"]["details"]["field"] == "kind", r.body
