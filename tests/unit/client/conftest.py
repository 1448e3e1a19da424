"""A small stand-in for the API, served by aiohttp in this process: it records what it was
sent and answers what the test says."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

TOKEN = "s3cret-token-value"
_ERROR = {
    "error": {
        "code": "not_found",
        "message": "no VM vm-9",
        "details": {"vm_id": "vm-9"},
        "request_id": "req-1",
    }
}
SSE = (
    ": heartbeat\n\n"
    'id: 1\nevent: vm.state_changed\ndata: {"state":\ndata: "RUNNING"}\n\n'
    "event: task.step\ndata: {}\n\n"
)


@dataclass
class Seen:
    """What the stand-in was sent."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    dropped: threading.Event = field(default_factory=threading.Event)


def make_app(seen: Seen) -> web.Application:
    async def record(request: web.Request) -> None:
        body = await request.read()
        seen.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
                "last_event_id": request.headers.get("Last-Event-ID"),
                "body": json.loads(body) if body else None,
            }
        )

    async def echo(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"ok": True, "query": dict(request.query)})

    async def missing(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response(_ERROR, status=404)

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def pages(request: web.Request) -> web.Response:
        await record(request)
        after = request.query.get("after")
        if after is None:
            return web.json_response({"items": [1, 2], "next_cursor": "c2"})
        if after == "c2":
            return web.json_response({"items": [3], "next_cursor": "c3"})
        return web.json_response({"items": [4], "next_cursor": None})

    async def stream(request: web.Request) -> web.StreamResponse:
        await record(request)
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        await reply.write(SSE.encode())
        await reply.write_eof()
        return reply

    async def interrupt(request: web.Request) -> web.Response:
        # The caller is inside its call now: Ctrl-C it, and never answer.
        os.kill(os.getpid(), signal.SIGINT)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # the caller hung up (handler_cancellation)
            seen.dropped.set()
            raise
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/api/v1/echo", echo)
    app.router.add_post("/api/v1/echo", echo)
    app.router.add_get("/api/v1/missing", missing)
    app.router.add_get("/api/v1/empty", empty)
    app.router.add_get("/api/v1/pages", pages)
    app.router.add_get("/api/v1/stream", stream)
    app.router.add_get("/api/v1/stream-missing", missing)
    app.router.add_get("/api/v1/interrupt", interrupt)
    return app


@dataclass
class Api:
    url: str
    seen: Seen


async def _serve(seen: Seen) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(make_app(seen), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/api/v1"


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    """The stand-in on the test's own event loop."""
    seen = Seen()
    runner, url = await _serve(seen)
    try:
        yield Api(url, seen)
    finally:
        await runner.cleanup()


@pytest.fixture
def threaded_api() -> Iterator[Api]:
    """The stand-in on its own event loop in a thread, for a blocking caller."""
    seen = Seen()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, url = asyncio.run_coroutine_threadsafe(_serve(seen), loop).result(10)
    try:
        yield Api(url, seen)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def nowhere() -> str:
    """An API URL nothing listens at."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v1"
