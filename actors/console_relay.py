"""A VM console relayed through the cluster: the node that owns the VM's datacenter opens the
console (the VNC server's TCP socket or the serial port's pseudo-terminal, which only it may
reach) and relays its bytes to the API node that holds the client's WebSocket.

Each session is two stream actors, one per side, that exchange :class:`ConsoleData` chunks
(at most :data:`CHUNK` bytes, numbered from 0 in each direction) and :class:`ConsoleCredit`
(the sequence number up to which the other side may send). A side sends a chunk only while
its number is below the credit it was given, and gives credit only for chunks it has written
out, so at most :data:`WINDOW` chunks per direction are in flight or queued: a slow client or
console slows its sender down instead of filling memory. Either side ending (its socket
closed, its peer's :class:`ConsoleClosed`, or its peer's node down, seen by watching the peer)
closes both. Messages are msgpack on the cluster transport like every other; nothing of the
stream is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from abc import abstractmethod
from typing import Any, assert_never

from cloudcore.errors import BackendUnavailable, Conflict
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message, Terminated
from hypervisor_drivers.types import ConsoleEndpoint, ConsoleKind

__all__ = [
    "CHUNK",
    "WINDOW",
    "ConsoleClosed",
    "ConsoleCredit",
    "ConsoleData",
    "ConsoleOpened",
    "ConsolePeer",
    "OwnerStream",
    "StreamEnd",
    "StreamMessage",
    "connect",
]

_log = get_logger("actors.console_relay")

#: The most bytes a chunk carries.
CHUNK = 64 * 1024
#: How many chunks a side may have sent that the other has not written out yet.
WINDOW = 8
_CONNECT_TIMEOUT = 5.0

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ConsoleData(Message, frozen=True, kw_only=True):
    """Chunk ``seq`` of one direction of session ``session``."""

    session: str
    seq: int
    data: bytes


class ConsoleCredit(Message, frozen=True, kw_only=True):
    """The receiver may send chunks numbered below ``upto``."""

    session: str
    upto: int


class ConsoleClosed(Message, frozen=True, kw_only=True):
    """The other side ended the session."""

    session: str
    reason: str


class ConsolePeer(Message, frozen=True, kw_only=True):
    """The API side learns its peer, the owner's stream, once the owner has opened the
    console (until then it neither reads nor sends)."""

    peer: ActorRef[Any]


class ConsoleOpened(Message, frozen=True, kw_only=True):
    """The owner's answer to an open: its stream's ref, or why it was refused (answered, not
    raised: a top-level actor that raises twice within seconds is stopped by its guardian).
    :meth:`check` raises the refusal."""

    stream: ActorRef[Any] | None = None
    refused: str = ""
    in_use: bool = False

    def check(self) -> ActorRef[Any]:
        """The stream; Conflict when the console is in use, else BackendUnavailable."""
        if self.stream is not None:
            return self.stream
        raise (Conflict if self.in_use else BackendUnavailable)(self.refused)


class _StreamEnded(Message, frozen=True, kw_only=True):
    reason: str


StreamMessage = (
    ConsoleData | ConsoleCredit | ConsoleClosed | ConsolePeer | Terminated | _StreamEnded
)


class StreamEnd(Actor[StreamMessage]):
    """One side of a session: reads its own end (:meth:`read`) into chunks for the peer, and
    writes the peer's chunks to its own end (:meth:`write`), in order, under credit."""

    def __init__(self, session: str, peer: ActorRef[Any] | None) -> None:
        self.session = session
        self.peer = peer
        self._sent = 0  # the next chunk's number
        self._credit = 0  # may send chunks numbered below this
        self._credited = asyncio.Event()
        self._received = 0  # the next chunk expected
        self._granted = 0  # the credit last given
        self._closing = False
        self._pump: asyncio.Task[None] | None = None

    @abstractmethod
    async def read(self) -> bytes:
        """The next bytes of this side's end (b"" at its end)."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Write the peer's bytes to this side's end (returns once they are taken)."""

    @abstractmethod
    async def close(self) -> None:
        """Close this side's end."""

    async def started(self) -> None:
        if self.peer is not None:
            self._begin(self.peer)

    def _begin(self, peer: ActorRef[Any]) -> None:
        self.peer = peer
        self.context.watch(peer)
        self._grant(WINDOW)
        self._pump = asyncio.create_task(self._relay(), name=f"console-{self.session}")

    async def receive(self, message: StreamMessage) -> None:
        match message:
            case ConsoleData(seq=seq, data=data):
                await self._take(seq, data)
            case ConsoleCredit(upto=upto):
                if upto > self._credit:
                    self._credit = upto
                    self._credited.set()
            case ConsolePeer(peer=peer):
                if self.peer is None:
                    self._begin(peer)
            case ConsoleClosed(reason=reason):
                self._end(reason, tell_peer=False)
            case Terminated(actor=actor, reason=reason):
                if actor == self.peer:
                    self._end(f"peer {reason}", tell_peer=False)
            case _StreamEnded(reason=reason):
                self._end(reason, tell_peer=True)
            case _:
                assert_never(message)

    async def _take(self, seq: int, data: bytes) -> None:
        if self._closing or seq < self._received:
            return  # a duplicate, or after the end
        if seq > self._received:
            self._end(f"chunk {self._received} lost", tell_peer=True)
            return
        try:
            await self.write(data)
        except (OSError, ConnectionError) as exc:
            self._end(f"write failed ({type(exc).__name__})", tell_peer=True)
            return
        self._received = seq + 1
        if self._granted - self._received <= WINDOW // 2:
            self._grant(self._received + WINDOW)

    def _grant(self, upto: int) -> None:
        self._granted = upto
        assert self.peer is not None
        self.peer.tell(ConsoleCredit(session=self.session, upto=upto))

    async def _relay(self) -> None:
        """This side's end to the peer, a chunk at a time, while credit lasts."""
        reason = "closed"
        try:
            while data := await self.read():
                for start in range(0, len(data), CHUNK):
                    while self._sent >= self._credit:
                        self._credited.clear()
                        await self._credited.wait()
                    assert self.peer is not None
                    chunk = data[start : start + CHUNK]
                    self.peer.tell(ConsoleData(session=self.session, seq=self._sent, data=chunk))
                    self._sent += 1
        except (OSError, ConnectionError) as exc:
            reason = f"read failed ({type(exc).__name__})"
        self.context.self_ref.tell(_StreamEnded(reason=reason))

    def _end(self, reason: str, *, tell_peer: bool) -> None:
        if self._closing:
            return
        self._closing = True
        if tell_peer and self.peer is not None:
            self.peer.tell(ConsoleClosed(session=self.session, reason=reason))
        _log.info("console.relay_closed", session=self.session, reason=reason)
        self.context.stop(self.context.self_ref)

    async def stopping(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if not self._closing and self.peer is not None:  # stopped from outside (shutdown)
            self.peer.tell(ConsoleClosed(session=self.session, reason="stopped"))
        await self.close()


class OwnerStream(StreamEnd):
    """The owner node's side: the console's own stream (opened by :func:`connect`)."""

    def __init__(self, session: str, peer: ActorRef[Any], stream: Stream) -> None:
        super().__init__(session, peer)
        self._reader, self._writer = stream

    async def read(self) -> bytes:
        try:
            return await self._reader.read(CHUNK)
        except OSError:  # a pseudo-terminal whose VM stopped reads EIO
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        # A serial console's writer is a pipe's, whose protocol has nothing to wait for
        # (asyncio raises NotImplementedError): closing it is enough.
        with contextlib.suppress(OSError, NotImplementedError):
            await self._writer.wait_closed()


async def connect(vm_id: str, endpoint: ConsoleEndpoint) -> Stream:
    """Open a VM's console: its VNC server's TCP socket, or its serial port's
    pseudo-terminal. BackendUnavailable when it cannot be reached."""
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            if endpoint.kind is ConsoleKind.SERIAL:
                return await _open_tty(endpoint.path)
            return await asyncio.open_connection(endpoint.host, endpoint.port)
    except (OSError, TimeoutError) as exc:
        raise BackendUnavailable(
            f"the {endpoint.kind} console of VM {vm_id} cannot be reached ({type(exc).__name__})"
        ) from None


async def _open_tty(path: str) -> Stream:
    """A pseudo-terminal as a stream pair, in raw mode (no echo, no line editing)."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        # Raw at once, without discarding what the VM wrote before anyone opened it.
        tty.setraw(fd, termios.TCSANOW)
        out = os.dup(fd)
    except BaseException:
        os.close(fd)
        raise
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out, "wb", 0)
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
