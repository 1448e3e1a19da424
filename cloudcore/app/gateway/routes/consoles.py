"""VM consoles: a ticket for a VM's graphical console, and the WebSocket that spends it
(see :mod:`cloudcore.app.gateway.consoles`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from aiohttp import web

from cloudcore.app.gateway.api import Api, ApiRequest
from cloudcore.app.gateway.consoles import connect, proxy, relay, serial_session, websocket
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.routes.vms import visible_vm
from hypervisor_drivers.types import ConsoleKind

__all__ = ["ConsoleQuery", "ConsoleView", "api"]

api = Api("consoles")

_TICKET = "/consoles/{ticket}"


class ConsoleView(msgspec.Struct, frozen=True, kw_only=True):
    """``url``: a WebSocket URL that opens the console once, until ``expires_at``; it speaks
    ``protocol`` (RFB, the VNC protocol) in binary messages, as noVNC expects."""

    vm_id: str
    kind: ConsoleKind
    protocol: Annotated[
        str, msgspec.Meta(description="rfb (the VNC protocol), or raw (a serial terminal's bytes)")
    ]
    url: str
    path: str
    expires_at: datetime


class ConsoleQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``kind``: ``vnc`` (the graphical console, the default) or ``serial``."""

    kind: ConsoleKind = ConsoleKind.VNC


@api.get(
    "/vms/{vm_id}/console",
    query=ConsoleQuery,
    reply=ConsoleView,
    summary="Get a one-use URL to a VM's graphical console",
    errors=(404, 409, 503),
)
async def get_console(req: ApiRequest[None, ConsoleQuery]) -> ConsoleView:
    """The VM must be RUNNING or PAUSED (409 illegal_transition otherwise) on a host whose
    driver offers consoles (409 unsupported_operation: the simulated hosts have none). The
    URL is good for one WebSocket, opened within ``api.console_ticket_seconds``."""
    vm = await visible_vm(req)
    kind = req.query.kind if req.query is not None else ConsoleKind.VNC
    endpoint = await req.gateway.orchestrator.console(vm, kind)
    tickets = req.gateway.consoles
    secret = await tickets.issue(vm.id, req.principal.user_id, endpoint, vm.datacenter_id)
    path = "/api/v1" + _TICKET.format(ticket=secret)
    scheme = "wss" if req.raw.secure else "ws"
    return ConsoleView(
        vm_id=vm.id,
        kind=kind,
        protocol="rfb" if kind is ConsoleKind.VNC else "raw",
        url=f"{scheme}://{req.raw.host}{path}",
        path=path,
        expires_at=datetime.now(UTC) + timedelta(seconds=tickets.lifetime),
    )


@api.get(
    _TICKET,
    public=True,
    summary="Open a console (WebSocket; the ticket is the credential)",
    errors=(400, 404, 409, 503),
    content_type="application/octet-stream",
)
async def open_console(req: ApiRequest[None, None]) -> web.StreamResponse:
    """Upgrades to a WebSocket relaying the console's bytes. 404 when the ticket is unknown,
    spent or expired; 400 for a request that is not a WebSocket upgrade (the ticket is then
    left unspent); 409 when the VM's serial console is in use by another session; 503 when the
    console cannot be reached, or when the VM's datacenter runs on another node that is down
    (with Retry-After; the ticket is then left unspent)."""
    tickets, secret = req.gateway.consoles, req.params["ticket"]
    peeked = await tickets.peek(secret)
    if peeked is None:
        raise ApiError(404, "not_found", "no such console ticket: unknown, used or expired")
    ws = websocket()
    if not ws.can_prepare(req.raw).ok:
        raise ApiError(400, "bad_request", "a console ticket opens a WebSocket: send an upgrade")
    orchestrator = req.gateway.orchestrator
    # Opened by the node that runs the VM's datacenter: another node's, through the cluster.
    port = await orchestrator.port_of(peeked.datacenter_id) if peeked.datacenter_id else None
    ticket = await tickets.spend(secret)
    if ticket is None:  # spent meanwhile by a concurrent request
        raise ApiError(404, "not_found", "no such console ticket: unknown, used or expired")
    if port is not None:
        return await relay(req.raw, ws, ticket, port, orchestrator.system)
    with serial_session(tickets, ticket):
        reader, writer = await connect(ticket)
        return await proxy(req.raw, ws, ticket, reader, writer)
