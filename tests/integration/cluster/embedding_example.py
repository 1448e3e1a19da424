"""Embed a cloudcore cluster node in an aiohttp service and call cluster actors from handlers.

    python embedding_example.py worker   # a node that offers the Counter kind
    python embedding_example.py          # the web service, on 127.0.0.1:$PORT (8080)

Settings come from conf/default.toml and CLOUDCORE_<SECTION>__<KEY> variables, for example
CLOUDCORE_TRANSPORT__KIND=amqp CLOUDCORE_NODE__ID=web-1 and, for the worker,
CLOUDCORE_NODE__CAPABILITIES='{ role = "worker" }'.
"""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from cloudcore.cluster import ClusterNode
from cloudcore.config import Settings, load_settings
from cloudcore.logging import configure_logging
from cloudcore.runtime import Actor, ActorRef, Message


class Add(Message, frozen=True, kw_only=True):
    n: int


class Counter(Actor[Add]):
    def __init__(self) -> None:
        self.total = 0

    async def receive(self, message: Add) -> int:
        self.total += message.n
        return self.total


NODE = web.AppKey("node", ClusterNode)
COUNTER = web.AppKey("counter", ActorRef)


def settings() -> Settings:
    # JSON log lines when stderr is not a terminal (log.format forces one), as `cloudcore serve`.
    loaded = load_settings()
    configure_logging(loaded.log.level, loaded.log.format)
    return loaded


async def cluster_node(app: web.Application) -> AsyncIterator[None]:
    # The node runs in aiohttp's event loop, started and stopped with the application.
    async with ClusterNode(settings(), kinds={"Counter": Counter}) as node:
        app[NODE] = node
        yield


async def add(request: web.Request) -> web.Response:
    app = request.app
    if COUNTER not in app:  # created once, on a node with role=worker
        app[COUNTER] = await app[NODE].spawn_remote("Counter", requirements={"role": "worker"})
    counter = app[COUNTER]
    total = await counter.ask(Add(n=int(request.match_info["n"])), timeout=5)
    return web.json_response({"total": total, "node": counter.node})


async def members(request: web.Request) -> web.Response:
    view = request.app[NODE].members()
    return web.json_response({m.node: {"status": m.status, **m.capabilities} for m in view})


def serve_web() -> None:
    app = web.Application()
    app.cleanup_ctx.append(cluster_node)
    app.add_routes([web.post("/add/{n}", add), web.get("/cluster", members)])
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))


async def serve_worker() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with ClusterNode(settings(), kinds={"Counter": Counter}):
        await stop.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        asyncio.run(serve_worker())
    else:
        serve_web()
