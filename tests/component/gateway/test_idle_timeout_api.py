"""``api.idle_timeout``: a connection that sends nothing, or only part of its headers, is closed
by the server after that long instead of being held forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cloudcore.store import Store
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api

IDLE = 0.5


@pytest.fixture
async def idle_api(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[ApiClient]:
    async with serve_api(sqlite_store, api_settings(tmp_path, idle_timeout=IDLE)) as client:
        yield client


async def _closed_after(api: ApiClient, sent: bytes) -> float:
    """Seconds until the server closes a connection that sent ``sent`` and then nothing."""
    url = urlsplit(api.base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    began = time.monotonic()
    try:
        writer.write(sent)
        await writer.drain()
        # The server's close is the event awaited; the bound only keeps a regression finite.
        data = await asyncio.wait_for(reader.read(), timeout=IDLE * 20)
    finally:
        writer.close()
    assert data == b"", data[:200]
    return time.monotonic() - began


async def test_a_silent_connection_is_closed_after_the_idle_timeout(idle_api: ApiClient) -> None:
    took = await _closed_after(idle_api, b"")
    assert IDLE * 0.5 <= took < IDLE * 10


async def test_a_client_sending_half_its_headers_is_let_go(idle_api: ApiClient) -> None:
    took = await _closed_after(idle_api, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
    assert took < IDLE * 10
