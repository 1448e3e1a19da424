"""VM consoles: short-lived, single-use tickets, and the WebSocket relay to a VM's VNC or serial
console.

``GET /vms/{id}/console`` checks the caller may see the VM, asks the VM's host where its console
listens, and gives a ticket: a random secret in a URL that opens that console once, within
``api.console_ticket_seconds``. The WebSocket at that URL needs no bearer token (browsers
cannot send one on a WebSocket): the ticket is the credential, spent when the socket opens.
Tickets are kept in the store by their SHA-256 (never the secret), so any API node opens one,
once.

The console is opened by the node that runs the VM's datacenter, the one that reaches its
host: on a single node (or the owner itself) the relay connects from here; in a cluster whose
datacenter runs on another node, the owner opens it and the bytes cross the cluster transport
between an :class:`ApiStream` here and the owner's stream, under credit (see
:mod:`actors.console_relay`). When that owner is down the WebSocket is refused with 503 and
Retry-After, and the ticket is left unspent.

The relay is byte-for-byte: binary WebSocket messages to the VNC server's TCP socket and back
(what noVNC and websockify speak, subprotocol ``binary``), or to the serial port's
pseudo-terminal on the host (raw bytes, as a terminal sends and shows them; one session per
serial port at a time, since two readers would split its output). Nothing of the stream is
logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
from aiohttp import WSMsgType, web

from actors.console_relay import ConsoleClosed, ConsoleOpened, ConsolePeer, StreamEnd
from actors.console_relay import connect as relay_connect
from actors.routing import PortMessage, RoutedConsoleOpen
from cloudcore.errors import Conflict
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorRef, ActorSystem
from cloudcore.store import Store
from hypervisor_drivers.types import ConsoleEndpoint, ConsoleKind

__all__ = [
    "ApiStream",
    "ConsoleTicket",
    "ConsoleTickets",
    "connect",
    "proxy",
    "relay",
    "serial_session",
    "websocket",
]

_log = get_logger("cloudcore.app.gateway.consoles")
_CHUNK = 64 * 1024


class ConsoleTicket(msgspec.Struct, frozen=True, kw_only=True):
    """What a ticket opens: the VM's console at ``endpoint``, for ``user_id``; the node that
    runs ``datacenter_id`` opens it ("": this node)."""

    vm_id: str
    user_id: str
    endpoint: ConsoleEndpoint
    datacenter_id: str = ""


_KIND = "console"
_decoder = msgspec.json.Decoder(ConsoleTicket)


class ConsoleTickets:
    """Console tickets, kept in the store by the SHA-256 of their secret, so a ticket one
    API node issued opens on any (behind a load balancer) and a copy of the store opens
    nothing. Each one opens one console, once, before it expires: spending it is one atomic
    delete in the store, so of two nodes racing with one ticket only one opens it."""

    def __init__(self, store: Store, lifetime: float) -> None:
        self.lifetime = lifetime
        self._store = store
        #: The serial consoles (pseudo-terminal paths) a session of this node has open now
        #: (a pseudo-terminal is on this node's machine: no other node opens it).
        self.serial_in_use: set[str] = set()

    async def issue(
        self, vm_id: str, user_id: str, endpoint: ConsoleEndpoint, datacenter_id: str = ""
    ) -> str:
        """A new ticket's secret (256 random bits)."""
        secret = secrets.token_urlsafe(32)
        ticket = ConsoleTicket(
            vm_id=vm_id, user_id=user_id, endpoint=endpoint, datacenter_id=datacenter_id
        )
        expires = datetime.now(UTC) + timedelta(seconds=self.lifetime)
        payload = msgspec.json.encode(ticket).decode()
        await self._store.put_grant(_digest(secret), _KIND, payload, expires)
        return secret

    async def peek(self, secret: str) -> ConsoleTicket | None:
        """The ticket, if it is valid now (not spent)."""
        return _decoded(await self._store.get_grant(_digest(secret), _KIND))

    async def spend(self, secret: str) -> ConsoleTicket | None:
        """The ticket, once: it is gone afterwards. None when unknown, spent or expired."""
        return _decoded(await self._store.take_grant(_digest(secret), _KIND))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _decoded(payload: str | None) -> ConsoleTicket | None:
    return None if payload is None else _decoder.decode(payload)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(ticket: ConsoleTicket) -> Stream:
    """Open the ticket's console from this node: its VNC server's TCP socket, or its serial
    port's pseudo-terminal. BackendUnavailable when it cannot be reached."""
    return await relay_connect(ticket.vm_id, ticket.endpoint)


@contextlib.contextmanager
def serial_session(tickets: ConsoleTickets, ticket: ConsoleTicket) -> Iterator[None]:
    """Hold the ticket's serial port for one session (Conflict when another holds it)."""
    path = ticket.endpoint.path if ticket.endpoint.kind is ConsoleKind.SERIAL else ""
    if not path:
        yield
        return
    if path in tickets.serial_in_use:
        raise Conflict(f"the serial console of VM {ticket.vm_id} is in use by another session")
    tickets.serial_in_use.add(path)
    try:
        yield
    finally:
        tickets.serial_in_use.discard(path)


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
        # A serial console's writer is a pipe's, whose protocol has nothing to wait for
        # (asyncio raises NotImplementedError): closing it is enough.
        with contextlib.suppress(OSError, NotImplementedError):
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
    with contextlib.suppress(OSError):  # a pseudo-terminal whose VM stopped reads EIO
        while data := await reader.read(_CHUNK):
            await ws.send_bytes(data)


class ApiStream(StreamEnd):
    """The API node's side of a console relayed from the datacenter's owner: the client's
    WebSocket. ``done`` is resolved once the session has ended (the handler waits on it)."""

    def __init__(self, session: str, ws: web.WebSocketResponse, done: asyncio.Future[None]) -> None:
        super().__init__(session, None)
        self._ws = ws
        self._done = done

    async def read(self) -> bytes:
        while True:
            message = await self._ws.receive()
            if message.type is WSMsgType.BINARY:
                data: bytes = message.data
            elif message.type is WSMsgType.TEXT:  # old clients: the same bytes, as text
                data = message.data.encode("latin-1")
            else:
                return b""
            if data:
                return data

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            if not self._done.done():
                self._done.set_result(None)


_OPEN_TIMEOUT = 15.0


async def relay(
    request: web.Request,
    ws: web.WebSocketResponse,
    ticket: ConsoleTicket,
    port: ActorRef[PortMessage],
    system: ActorSystem,
) -> web.WebSocketResponse:
    """Have the owner of the ticket's datacenter (``port``) open its console, answer the
    WebSocket upgrade, and relay between them until either side closes."""
    session = secrets.token_hex(8)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stream = system.spawn(ApiStream, session, ws, done, name=f"console-{session}")
    opened: ConsoleOpened | None = None
    try:
        opened = await port.ask(
            RoutedConsoleOpen(
                datacenter_id=ticket.datacenter_id,
                vm_id=ticket.vm_id,
                session=session,
                endpoint=ticket.endpoint,
                peer=stream,
            ),
            timeout=_OPEN_TIMEOUT,
        )
        peer = opened.check()
        await ws.prepare(request)
        _log.info("console.opened", vm_id=ticket.vm_id, user_id=ticket.user_id, relayed=True)
        stream.tell(ConsolePeer(peer=peer))
        await done
    finally:
        if not done.done():  # refused, or the client's request ended: end both sides
            if opened is not None and opened.stream is not None:
                opened.stream.tell(ConsoleClosed(session=session, reason="client gone"))
            stream.stop()
        _log.info("console.closed", vm_id=ticket.vm_id, user_id=ticket.user_id, relayed=True)
    return ws
