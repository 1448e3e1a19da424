"""The console relay's two stream actors on two nodes of the in-process cluster transport (the
messages encoded as on the wire): a real TCP console on the owner's side, a client that stops
reading on the API's side. The sender stays within its credit, the bytes arrive in order, and
either side's end closes the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors.console_relay import (
    CHUNK,
    WINDOW,
    ConsolePeer,
    OwnerStream,
    StreamEnd,
    connect,
)
from cloudcore.cluster import ClusterNode
from cloudcore.config import ClusterSettings, NodeSettings, Settings
from cloudcore.runtime import ActorRef
from cloudcore.transport import LocalHub, LocalTransport
from hypervisor_drivers.types import ConsoleEndpoint, ConsoleKind
from tests.waiting import eventually

PAYLOAD = bytes(range(256)) * (32 * 1024 * 1024 // 256)  # beyond any socket buffer


@dataclass
class Console:
    """A TCP server standing for a VNC server: sends PAYLOAD, keeps what it receives."""

    written: int = 0
    received: bytearray = field(default_factory=bytearray)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            for start in range(0, len(PAYLOAD), CHUNK):
                writer.write(PAYLOAD[start : start + CHUNK])
                await writer.drain()
                self.written = start + CHUNK

        sending = asyncio.create_task(send())
        try:
            while data := await reader.read(CHUNK):
                self.received.extend(data)
                if self.received.endswith(b"bye"):
                    break
        finally:
            sending.cancel()
            writer.close()
            self.ended.set()


class Client(StreamEnd):
    """The API's side, with a WebSocket client that reads only when ``reading`` is set."""

    def __init__(self, session: str, state: ClientState) -> None:
        super().__init__(session, None)
        self.state = state

    async def read(self) -> bytes:
        return await self.state.typed.get()

    async def write(self, data: bytes) -> None:
        self.state.writes += 1
        await self.state.reading.wait()
        self.state.shown.extend(data)

    async def close(self) -> None:
        self.state.closed.set()


@dataclass
class ClientState:
    typed: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    shown: bytearray = field(default_factory=bytearray)
    writes: int = 0


owners: list[OwnerStream] = []


class Owner(OwnerStream):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        owners.append(self)


def _settings(node: str) -> Settings:
    return Settings(
        node=NodeSettings(id=node),
        cluster=ClusterSettings(heartbeat_interval=0.05, node_timeout=0.3),
    )


@dataclass
class Session:
    api: ClusterNode
    owner: ClusterNode
    console: Console
    client: ClientState
    owner_ref: ActorRef[Any]


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    owners.clear()
    console = Console()
    server = await asyncio.start_server(console.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hub = LocalHub()
    api = ClusterNode(_settings("api"), transport=LocalTransport(hub))
    owner = ClusterNode(_settings("owner"), transport=LocalTransport(hub))
    await api.start()
    await owner.start()
    try:
        await api.wait_for_nodes(["api", "owner"], 5)
        client = ClientState()
        # As the gateway and the owner's port do it: the API's side first, then the owner's
        # (the console opened), then the API's side learns its peer.
        client_ref = api.spawn(Client, "s1", client, name="console-s1")
        stream = await connect(
            "vm-1", ConsoleEndpoint(kind=ConsoleKind.VNC, host="127.0.0.1", port=port)
        )
        owner_ref = owner.spawn(
            Owner, "s1", owner.ref("api", "/user/console-s1"), stream, name="console-s1"
        )
        client_ref.tell(ConsolePeer(peer=api.ref("owner", "/user/console-s1")))
        yield Session(api, owner, console, client, owner_ref)
    finally:
        await owner.stop()
        await api.stop()
        server.close()


async def test_a_slow_client_holds_the_console_back_within_the_window_and_gets_every_byte(
    session: Session,
) -> None:
    console, client = session.console, session.client
    await eventually(lambda: client.writes == 1)  # the first chunk waits for the client
    owner = owners[0]
    await eventually(lambda: owner._sent == WINDOW)
    # The console's server is held back too: nothing beyond the window is buffered.
    assert console.written < len(PAYLOAD) // 2
    await asyncio.sleep(0)  # one more turn of the loop: still within the credit
    assert owner._sent == WINDOW

    client.reading.set()
    await eventually(lambda: len(client.shown) == len(PAYLOAD), timeout=60)
    assert client.shown == PAYLOAD

    client.typed.put_nowait(b"hello, ")
    client.typed.put_nowait(b"bye")  # the console closes on it: so does the client's side
    await asyncio.wait_for(console.ended.wait(), 10)
    assert console.received == b"hello, bye"
    await asyncio.wait_for(client.closed.wait(), 10)


async def test_the_client_closing_closes_the_console(session: Session) -> None:
    session.client.reading.set()
    session.client.typed.put_nowait(b"")  # the WebSocket closed
    await asyncio.wait_for(session.console.ended.wait(), 10)
    await session.owner_ref.stopped()


async def test_the_owners_node_leaving_closes_the_client(session: Session) -> None:
    await session.owner.stop()
    await asyncio.wait_for(session.client.closed.wait(), 10)


async def test_the_api_nodes_leaving_closes_the_console(session: Session) -> None:
    await session.api.stop()
    await asyncio.wait_for(session.console.ended.wait(), 10)
    await session.owner_ref.stopped()
