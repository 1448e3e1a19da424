"""A cloudcore node process: settings, logging, the actor system, and a clean stop on a signal.

Until the orchestrator's actors exist this node runs a small demonstration of the runtime: a
supervised ticker whose worker fails now and then and is restarted, logged as it happens.
"""

from __future__ import annotations

import asyncio
import signal

from cloudcore.config import Settings, load_settings
from cloudcore.errors import ConfigError
from cloudcore.logging import configure_logging, get_logger
from cloudcore.runtime import Actor, ActorRef, ActorSystem, Message

__all__ = ["run_node", "serve"]

_log = get_logger("cloudcore.node")


class Tick(Message, frozen=True, kw_only=True):
    pass


class Work(Message, frozen=True, kw_only=True):
    n: int


class _Worker(Actor[Work]):
    """Handles work; every seventh item fails, to show supervision restarting it."""

    async def receive(self, message: Work) -> None:
        if message.n % 7 == 0:
            raise RuntimeError(f"demonstration failure on item {message.n}")


class _Ticker(Actor[Tick]):
    """Sends the worker an item every second and logs the tree every ten."""

    def __init__(self) -> None:
        self.count = 0
        self.worker: ActorRef | None = None

    async def started(self) -> None:
        self.worker = self.context.spawn(_Worker, name="worker")
        self.context.schedule_periodic("tick", 1.0, Tick())

    async def receive(self, message: Tick) -> None:
        assert self.worker is not None
        self.count += 1
        self.worker.tell(Work(n=self.count))
        if self.count % 10 == 0:
            tree = self.context.system.tree("/user")
            _log.info(
                "demo.tree",
                actors=[(a.path, a.status, a.processed, a.restarts) for a in tree.walk()],
            )


async def run_node(settings: Settings, stop: asyncio.Event) -> None:
    """Run a node until ``stop`` is set, then shut it down gracefully."""
    async with ActorSystem(settings.node.id, settings.runtime) as system:
        system.spawn(_Ticker, name="demo")
        _log.info("node.started", node=settings.node.id)
        await stop.wait()
        _log.info("node.stopping", node=settings.node.id)
    _log.info("node.stopped", node=settings.node.id)


def serve(config: str | None = None) -> int:
    """Entry point of ``cloudcore serve``: run until SIGINT or SIGTERM."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        configure_logging()
        _log.error("config.invalid", error=str(exc))
        return 2
    configure_logging(settings.log.level, settings.log.format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_node(settings, stop)

    asyncio.run(main())
    return 0
