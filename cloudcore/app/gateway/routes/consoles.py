"""VM consoles: a ticket for a VM's graphical console, and the WebSocket that spends it
(see :mod:`cloudcore.app.gateway.consoles`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from aiohttp import web

from cloudcore.app.gateway.api import Api, ApiRequest
from cloudcore.app.gateway.consoles import proxy, websocket
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.routes.vms import visible_vm
from cloudcore.errors import BackendUnavailable

__all__ = ["ConsoleView", "api"]

api = Api("consoles")

_TICKET = "/consoles/{ticket}"
_CONNECT_TIMEOUT = 5.0


class ConsoleView(msgspec.Struct, frozen=True, kw_only=True):
    """``url``: a WebSocket URL that opens the console once, until ``expires_at``; it speaks
    ``protocol`` (RFB, the VNC protocol) in binary messages, as noVNC expects."""

    vm_id: str
    protocol: Annotated[str, msgspec.Meta(description="rfb: the VNC protocol")]
    url: str
    path: str
    expires_at: datetime


@api.get(
    "/vms/{vm_id}/console",
    reply=ConsoleView,
    summary="Get a one-use URL to a VM's graphical console",
    errors=(404, 409, 503),
)
async def get_console(req: ApiRequest[None, None]) -> ConsoleView:
    """The VM must be RUNNING or PAUSED (409 illegal_transition otherwise) on a host whose
    driver offers consoles (409 unsupported_operation: the simulated hosts have none). The
    URL is good for one WebSocket, opened within ``api.console_ticket_seconds``."""
    vm = await visible_vm(req)
    endpoint = await req.gateway.orchestrator.console(vm)
    tickets = req.gateway.consoles
    secret = tickets.issue(vm.id, req.principal.user_id, endpoint)
    path = "/api/v1" + _TICKET.format(ticket=secret)
    scheme = "wss" if req.raw.secure else "ws"
    return ConsoleView(
        vm_id=vm.id,
        protocol="rfb",
        url=f"{scheme}://{req.raw.host}{path}",
        path=path,
        expires_at=datetime.now(UTC) + timedelta(seconds=tickets.lifetime),
    )


@api.get(
    _TICKET,
    public=True,
    summary="Open a console (WebSocket; the ticket is the credential)",
    errors=(400, 404, 503),
    content_type="application/octet-stream",
)
async def open_console(req: ApiRequest[None, None]) -> web.StreamResponse:
    """Upgrades to a WebSocket relaying the console's bytes. 404 when the ticket is unknown,
    spent or expired; 400 for a request that is not a WebSocket upgrade (the ticket is then
    left unspent); 503 when the console cannot be reached."""
    tickets, secret = req.gateway.consoles, req.params["ticket"]
    if tickets.peek(secret) is None:
        raise ApiError(404, "not_found", "no such console ticket: unknown, used or expired")
    ws = websocket()
    if not ws.can_prepare(req.raw).ok:
        raise ApiError(400, "bad_request", "a console ticket opens a WebSocket: send an upgrade")
    ticket = tickets.spend(secret)
    if ticket is None:  # spent meanwhile by a concurrent request
        raise ApiError(404, "not_found", "no such console ticket: unknown, used or expired")
    endpoint = ticket.endpoint
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    except (OSError, TimeoutError) as exc:
        raise BackendUnavailable(
            f"the console of VM {ticket.vm_id} cannot be reached ({type(exc).__name__})"
        ) from None
    return await proxy(req.raw, ws, ticket, reader, writer)
