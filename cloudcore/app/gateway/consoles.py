"""VM consoles: short-lived, single-use tickets, and the WebSocket proxy to a VM's VNC.

``GET /vms/{id}/console`` checks the caller may see the VM, asks the VM's host where its console
listens, and gives a ticket: a random secret in a URL that opens that console once, within
``api.console_ticket_seconds``. The WebSocket at that URL needs no bearer token (browsers
cannot send one on a WebSocket): the ticket is the credential, spent when the socket opens.
Tickets live in the memory of the node that issued them, so the URL must reach that node.

The proxy is byte-for-byte: binary WebSocket messages to the VNC server's TCP socket and back
(what noVNC and websockify speak, subprotocol ``binary``). Nothing of the stream is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from cloudcore.logging import get_logger
from hypervisor_drivers.types import ConsoleEndpoint

__all__ = ["ConsoleTicket", "ConsoleTickets", "proxy", "websocket"]

_log = get_logger("cloudcore.app.gateway.consoles")
_CHUNK = 64 * 1024
#: Tickets kept at most; the oldest go first past it (each expires in seconds anyway).
_MAX_TICKETS = 10_000


@dataclass(frozen=True, slots=True)
class ConsoleTicket:
    vm_id: str
    user_id: str
    endpoint: ConsoleEndpoint
    expires: float  # on the clock of the tickets


class ConsoleTickets:
    """The tickets of this node, by secret. Each one opens one console, once, before it
    expires."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._tickets: dict[str, ConsoleTicket] = {}

    def issue(self, vm_id: str, user_id: str, endpoint: ConsoleEndpoint) -> str:
        now = self._clock()
        self._tickets = {k: t for k, t in self._tickets.items() if t.expires > now}
        while len(self._tickets) >= _MAX_TICKETS:
            del self._tickets[next(iter(self._tickets))]
        secret = secrets.token_urlsafe(32)
        self._tickets[secret] = ConsoleTicket(vm_id, user_id, endpoint, now + self.lifetime)
        return secret

    def peek(self, secret: str) -> ConsoleTicket | None:
        """The ticket, if it is valid now (not spent)."""
        ticket = self._tickets.get(secret)
        if ticket is None or ticket.expires <= self._clock():
            return None
        return ticket

    def spend(self, secret: str) -> ConsoleTicket | None:
        """The ticket, once: it is gone afterwards. None when unknown, spent or expired."""
        ticket = self._tickets.pop(secret, None)
        if ticket is None or ticket.expires <= self._clock():
            return None
        return ticket


def websocket() -> web.WebSocketResponse:
    """The console's side of the upgrade (check it with ``can_prepare`` before spending)."""
    return web.WebSocketResponse(protocols=("binary",), heartbeat=30.0, max_msg_size=_CHUNK * 16)


async def proxy(
    request: web.Request,
    ws: web.WebSocketResponse,
    ticket: ConsoleTicket,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> web.WebSocketResponse:
    """Answer the WebSocket upgrade and relay bytes between it and the console's TCP stream
    until either side closes."""
    await ws.prepare(request)
    _log.info("console.opened", vm_id=ticket.vm_id, user_id=ticket.user_id)
    to_vm = asyncio.create_task(_client_to_vm(ws, writer))
    to_client = asyncio.create_task(_vm_to_client(reader, ws))
    try:
        await asyncio.wait((to_vm, to_client), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_vm, to_client):
            task.cancel()
        await asyncio.gather(to_vm, to_client, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await ws.close()
        _log.info("console.closed", vm_id=ticket.vm_id, user_id=ticket.user_id)
    return ws


async def _client_to_vm(ws: web.WebSocketResponse, writer: asyncio.StreamWriter) -> None:
    async for message in ws:
        if message.type is WSMsgType.BINARY:
            writer.write(message.data)
        elif message.type is WSMsgType.TEXT:  # old clients: the same bytes, as text
            writer.write(message.data.encode("latin-1"))
        else:
            return
        await writer.drain()


async def _vm_to_client(reader: asyncio.StreamReader, ws: web.WebSocketResponse) -> None:
    while data := await reader.read(_CHUNK):
        await ws.send_bytes(data)
