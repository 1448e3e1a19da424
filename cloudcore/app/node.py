"""A cloudcore node process: settings, logging, store, event bus, the actor system with the
orchestrator on it, and a clean stop on a signal.

This module is the composition root of the all-in-one node (it sits at the top, beside the CLI
and the gateway, so it may import every layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cloudcore.config import Settings, load_settings
from cloudcore.errors import BackendUnavailable, ConfigError, SchemaMismatch
from cloudcore.logging import configure_logging, get_logger
from cloudcore.runtime import ActorSystem

if TYPE_CHECKING:
    from actors.orchestrator import Orchestrator
    from cloudcore.cluster import Member

__all__ = ["run_node", "serve"]

_log = get_logger("cloudcore.app.node")

#: The cluster view the gateway shows at /system/nodes.
Members = Callable[[], "Sequence[Member]"]


def _alone() -> Sequence[Member]:
    return ()


async def run_node(settings: Settings, stop: asyncio.Event) -> None:
    """Run a node until ``stop`` is set, then shut it down gracefully."""
    from actors.orchestrator import Orchestrator
    from actors.registration import bootstrap_demo
    from actors.services import Services
    from cloudcore.events import open_event_bus
    from cloudcore.store import open_store

    await asyncio.to_thread(Path(settings.node.data_dir).mkdir, parents=True, exist_ok=True)
    store = await open_store(settings)
    try:
        events = await open_event_bus(settings)
        try:
            if settings.demo.enabled:
                await bootstrap_demo(store, settings)
            services = Services(store, events, settings.orchestrator)
            started: list[Orchestrator] = []

            async def start_actors(system: ActorSystem) -> None:
                started.append(
                    await Orchestrator.start(
                        system, services, settings.node.capabilities.get("datacenter")
                    )
                )

            async with (
                _actor_system(settings, start_actors) as (system, members),
                _api(settings, system, started[0], members),
            ):
                _log.info(
                    "node.started",
                    node=settings.node.id,
                    data_dir=settings.node.data_dir,
                    store=settings.store.backend,
                    events=settings.events.backend,
                )
                await stop.wait()
                _log.info("node.stopping", node=settings.node.id)
        finally:
            await events.close()
    finally:
        await store.close()
    _log.info("node.stopped", node=settings.node.id)


@contextlib.asynccontextmanager
async def _actor_system(
    settings: Settings, start_actors: Callable[[ActorSystem], Awaitable[None]]
) -> AsyncIterator[tuple[ActorSystem, Members]]:
    """The node's actor system with its actors started, and its cluster view: on its own with
    the local transport (no view), or joined to the cluster (transport.kind = "amqp"), where
    the actors start before the node takes commands from its queue."""
    if settings.transport.kind == "amqp":
        from cloudcore.cluster import ClusterNode

        async with ClusterNode(settings, setup=lambda node: start_actors(node.system)) as node:
            yield node.system, node.members
    else:
        async with ActorSystem(settings.node.id, settings.runtime) as system:
            await start_actors(system)
            yield system, _alone


@contextlib.asynccontextmanager
async def _api(
    settings: Settings, system: ActorSystem, orchestrator: Orchestrator, members: Members
) -> AsyncIterator[None]:
    """The HTTP API of the node (``api.enabled``), with the first admin token made if the
    store has none."""
    if not settings.api.enabled:
        yield
        return
    from cloudcore.app.gateway import Gateway, start_api
    from cloudcore.app.gateway.bootstrap import ensure_admin

    store = orchestrator.store
    written = await ensure_admin(store, settings.node.data_dir)
    if written is not None:
        print(f"cloudcore: the admin API token is in {written.resolve()}", flush=True)
    gateway = Gateway.of(settings, system, orchestrator, members)
    runner = await start_api(gateway)
    try:
        yield
    finally:
        await runner.cleanup()


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

    try:
        asyncio.run(main())
    except SchemaMismatch as exc:
        _log.error("store.schema_mismatch", error=str(exc))
        return 2
    except BackendUnavailable as exc:
        _log.error("node.backend_unavailable", error=str(exc))
        return 1
    return 0
