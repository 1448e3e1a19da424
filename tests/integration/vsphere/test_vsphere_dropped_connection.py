"""One connection closed by the server without a reply (as vcsim does when a handler panics) is
not a lost session: a read is retried on a fresh connection, a task is not, and the other hosts
sharing the session keep working. A TCP proxy in front of vcsim closes the connection of the
next request once armed."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("pyVmomi", reason="the vsphere extra (pyvmomi) is not installed")

from hypervisor_drivers.base import DomainSpec
from hypervisor_drivers.vsphere import _connection
from hypervisor_drivers.vsphere._client import HostClient
from hypervisor_drivers.vsphere._transport import ATTEMPTS, DROPPED
from tests import vcsim


class DroppingProxy:
    """Forwards TCP to vcsim; once armed, closes the next connection a request arrives on
    before any byte of it reaches vcsim."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.armed = 0
        self.dropped = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        down = asyncio.create_task(self._pump(up_reader, writer))
        self._tasks.add(down)
        try:
            while data := await reader.read(65536):
                if self.armed:
                    self.armed -= 1
                    self.dropped += 1
                    break  # the request is swallowed; both sides closed
                up_writer.write(data)
                await up_writer.drain()
        finally:
            down.cancel()
            self._tasks.discard(down)
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@pytest.fixture(scope="module")
def sim() -> Iterator[vcsim.Vcsim]:
    with vcsim.running_vcsim("-cluster-host", "2", "-ds", "1") as running:
        yield running


@pytest.fixture
async def proxy(sim: vcsim.Vcsim) -> AsyncIterator[DroppingProxy]:
    running = DroppingProxy(sim.port)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def clients(
    sim: vcsim.Vcsim, proxy: DroppingProxy
) -> AsyncIterator[tuple[HostClient, HostClient]]:
    """Two hosts' clients over one session through the proxy (no event watchers: the only
    requests on the wire are the test's)."""
    uri = sim.uri.replace(f":{sim.port}/", f":{proxy.port}/")

    def open_one(host: str) -> HostClient:
        settings = sim.settings(host)
        settings = type(settings)(uri=uri, extra=settings.extra)
        return HostClient(_connection.acquire(settings), settings)

    first = await asyncio.to_thread(open_one, "DC0_C0_H0")
    second = await asyncio.to_thread(open_one, "DC0_C0_H1")
    assert first.session is second.session
    try:
        yield first, second
    finally:
        for client in (first, second):
            await asyncio.to_thread(_connection.release, client.session)


def _spec(name: str) -> DomainSpec:
    import uuid

    return DomainSpec(uuid=str(uuid.uuid4()), name=name, vcpus=1, memory_mib=64)


async def test_a_dropped_read_is_retried_and_the_shared_session_is_kept(
    proxy: DroppingProxy, clients: tuple[HostClient, HostClient]
) -> None:
    first, second = clients
    spec = _spec("dropped-read")
    await asyncio.to_thread(first.define, spec)
    proxy.armed = 1
    found = await asyncio.to_thread(first.get_vm, spec.uuid)
    assert proxy.dropped == 1  # one request was dropped, and the call succeeded all the same
    assert found.uuid == spec.uuid
    assert await asyncio.to_thread(second.list_vms) == []  # the other host works on
    assert first.session.lost is None
    assert await asyncio.to_thread(first.session.alive)
    await asyncio.to_thread(first.destroy, spec.uuid)


async def test_a_dropped_task_is_not_repeated_and_the_session_lives_on(
    proxy: DroppingProxy, clients: tuple[HostClient, HostClient]
) -> None:
    first, second = clients
    spec = _spec("dropped-task")
    await asyncio.to_thread(first.define, spec)
    vm: Any = await asyncio.to_thread(first.vm, spec.uuid)
    proxy.armed = 1
    with pytest.raises(http.client.RemoteDisconnected):
        await asyncio.to_thread(vm.PowerOnVM_Task)  # not safe to repeat: not retried
    assert proxy.dropped == 1
    assert await asyncio.to_thread(first.session.alive)  # so the driver keeps the session
    assert await asyncio.to_thread(second.list_vms) == []
    await asyncio.to_thread(first.destroy, spec.uuid)


async def test_a_read_dropped_every_time_gives_up_after_a_bounded_number_of_tries(
    proxy: DroppingProxy, clients: tuple[HostClient, HostClient]
) -> None:
    first, _second = clients
    proxy.armed = 100
    with pytest.raises(DROPPED):  # the retries' fresh connections are closed in the handshake
        await asyncio.to_thread(first.list_vms)
    assert proxy.dropped == ATTEMPTS
    proxy.armed = 0
    assert await asyncio.to_thread(first.list_vms) == []
