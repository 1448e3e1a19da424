"""Console tickets and web sessions are kept in the store, not in one node's memory: a second
API node, on its own connection to the same database, redeems what the first one issued, a
ticket still opens once however many nodes race for it, and the database holds no secret."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cloudcore.app.gateway.app import bound_port, start_api
from cloudcore.app.gateway.auth import TokenCache
from cloudcore.app.gateway.consoles import ConsoleTickets
from cloudcore.app.gateway.context import Gateway
from cloudcore.store.sqlite import SqliteStore
from hypervisor_drivers.types import ConsoleEndpoint
from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_vms_api import running_vm
from tests.component.web.test_web_console import _login

_GREETING = b"RFB 003.008\n"


@pytest.fixture
async def second_node(api: ApiClient, tmp_path: Path) -> AsyncIterator[str]:
    """The origin of another API node: its own store connection, token cache, tickets and
    web sessions (nothing of the first node's memory)."""
    assert api.gateway is not None
    store = await SqliteStore.connect(tmp_path / "cloudcore.db")
    settings = api.settings
    gateway: Gateway = dataclasses.replace(
        api.gateway,
        store=store,
        tokens=TokenCache(store, settings.api.token_cache_seconds),
        consoles=ConsoleTickets(store, settings.api.console_ticket_seconds),
    )
    runner = await start_api(gateway)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()
        await store.close()


@pytest.fixture
async def vnc_port() -> AsyncIterator[int]:
    """A TCP server that greets as an RFB server does, where a VM's VNC would listen."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_GREETING)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def _first(api: ApiClient) -> str:
    return api.base.removesuffix("/api/v1")


async def _open(session: aiohttp.ClientSession, origin: str, secret: str) -> bytes | int:
    """The console's first bytes, or the status of a refused upgrade."""
    try:
        async with session.ws_connect(
            f"{origin}/api/v1/consoles/{secret}", protocols=("binary",)
        ) as ws:
            message = await ws.receive(timeout=10)
            return bytes(message.data)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_a_ticket_issued_on_one_node_opens_once_on_another(
    api: ApiClient, second_node: str, vnc_port: int
) -> None:
    assert api.gateway is not None
    endpoint = ConsoleEndpoint(host="127.0.0.1", port=vnc_port)
    secret = await api.gateway.consoles.issue("vm-1", api.users["alice"].id, endpoint)
    async with aiohttp.ClientSession() as session:
        assert await _open(session, second_node, secret) == _GREETING
        assert await _open(session, _first(api), secret) == 404  # spent, on every node
        assert await _open(session, second_node, secret) == 404


async def test_two_nodes_racing_with_one_ticket_open_it_once(
    api: ApiClient, second_node: str, vnc_port: int
) -> None:
    assert api.gateway is not None
    endpoint = ConsoleEndpoint(host="127.0.0.1", port=vnc_port)
    for _ in range(3):
        secret = await api.gateway.consoles.issue("vm-1", api.users["alice"].id, endpoint)
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(
                _open(session, _first(api), secret), _open(session, second_node, secret)
            )
        assert sorted(results, key=str) == [404, _GREETING], results


def _session_id(browser: aiohttp.ClientSession) -> str:
    return next(c.value for c in browser.cookie_jar if c.key == "cc_session")


async def test_a_web_session_opened_on_one_node_is_served_and_ended_by_another(
    api: ApiClient, second_node: str
) -> None:
    browser, _ = await _login(api, "alice")  # on the first node
    async with browser:
        # The same browser behind a load balancer: its cookie sent to the other node.
        cookies = {"cc_session": _session_id(browser)}
        async with aiohttp.ClientSession(cookies=cookies) as elsewhere:
            async with elsewhere.get(second_node + "/ui/vms", allow_redirects=False) as r:
                assert r.status == 200
                csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert csrf is not None
            vm_id = await running_vm(api)
            async with elsewhere.post(
                second_node + f"/ui/vms/{vm_id}/stop",
                data={"csrf": csrf.group(1)},
                headers={"Origin": second_node, "HX-Request": "true"},
            ) as r:
                assert r.status == 200, await r.text()  # the CSRF token is good there too
            async with elsewhere.post(
                second_node + "/ui/logout",
                data={"csrf": csrf.group(1)},
                headers={"Origin": second_node},
                allow_redirects=False,
            ) as r:
                assert r.status == 303
        async with browser.get(_first(api) + "/ui/vms", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/ui/login"


async def test_the_store_keeps_digests_never_the_secrets(api: ApiClient, vnc_port: int) -> None:
    assert api.gateway is not None
    endpoint = ConsoleEndpoint(host="127.0.0.1", port=vnc_port)
    secret = await api.gateway.consoles.issue("vm-1", api.users["alice"].id, endpoint)
    browser, _ = await _login(api, "alice")
    async with browser:
        session_id = _session_id(browser)
    async with api.store._reader() as conn:  # type: ignore[attr-defined]
        rows = await conn.fetch("SELECT digest, kind, payload FROM grants")
    assert sorted(row["kind"] for row in rows) == ["console", "session"]
    text = " ".join(f"{row['digest']} {row['payload']}" for row in rows)
    for kept_secret in (secret, session_id, api.tokens["alice"]):
        assert kept_secret not in text
