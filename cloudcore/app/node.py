"""A cloudcore node process: settings, logging, store, event bus, the actor system with the
orchestrator on it, and a clean stop on a signal.

This module is the composition root of the all-in-one node (it sits at the top, beside the CLI
and the gateway, so it may import every layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cloudcore.config import Settings, load_settings
from cloudcore.errors import BackendUnavailable, ConfigError, SchemaMismatch
from cloudcore.logging import configure_logging, get_logger
from cloudcore.runtime import ActorSystem

if TYPE_CHECKING:
    from actors.orchestrator import Orchestrator
    from actors.services import Services
    from actors.storage import StorageService
    from cloudcore.cluster import Member

__all__ = ["run_node", "serve"]

_log = get_logger("cloudcore.app.node")

#: The cluster view the gateway shows at /system/nodes.
Members = Callable[[], "Sequence[Member]"]


def _alone() -> Sequence[Member]:
    return ()


async def run_node(
    settings: Settings, stop: asyncio.Event, started: asyncio.Event | None = None
) -> None:
    """Run a node until ``stop`` is set, then shut it down gracefully. ``started`` is set once
    the node serves. A failure to start stops what had started before it is raised."""
    from cloudcore.app.gateway.app import listen

    await asyncio.to_thread(private_dir, Path(settings.node.data_dir))
    sock = listen(settings.api) if settings.api.enabled else None  # a taken port fails first
    try:
        await _run(settings, stop, started, sock)
    finally:
        if sock is not None:
            sock.close()  # a no-op once the API served on it (the runner closed it)
    _log.info("node.stopped", node=settings.node.id)  # not after a failed start: it raised


def private_dir(path: Path) -> None:
    """Make the data directory (0700: it holds the store and the admin token), or take group
    and other access away from an existing one."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
        _log.warning("node.data_dir_tightened", path=str(path), mode="0700")


async def _run(
    settings: Settings,
    stop: asyncio.Event,
    started: asyncio.Event | None,
    sock: socket.socket | None,
) -> None:
    from actors.dhcp import DhcpServers, options_of
    from actors.orchestrator import Orchestrator
    from actors.registration import bootstrap_demo
    from actors.services import Services
    from actors.template_disks import TemplateDisks
    from cloudcore.events import open_event_bus
    from cloudcore.events.relay import OutboxRelayActor
    from cloudcore.images import ImageLibrary, QemuImg, image_root
    from cloudcore.store import open_store

    store = await open_store(settings)
    try:
        events = await open_event_bus(settings)
        try:
            if settings.demo.enabled:
                await bootstrap_demo(store, settings)
            # Usage drifts only by a bug or an old release's half-done create: fix it before
            # taking requests (logged as quota.drift_fixed), and forget expired keys.
            await store.reconcile_quotas()
            await store.purge_idempotency_keys()
            library = ImageLibrary(image_root(settings), settings.node.id)
            disks = TemplateDisks(store, library, QemuImg(settings.images.qemu_img))
            services = Services(store, events, settings.orchestrator, disks=disks)
            orchestrators: list[Orchestrator] = []

            datacenter = settings.node.capabilities.get("datacenter")

            async def start_actors(system: ActorSystem) -> None:
                # Events are written with their changes; this actor publishes them.
                system.spawn(OutboxRelayActor, store, events, name="outbox-relay")
                orchestrator = await Orchestrator.start(system, services, datacenter)
                orchestrator.storage = await start_storage(system, services, settings)
                orchestrators.append(orchestrator)
                if settings.network.dhcp:  # a dnsmasq per network of its datacenters
                    dhcp = options_of(settings.network, settings.node.data_dir)
                    system.spawn(DhcpServers, store, events, dhcp, datacenter, name="dhcp")

            async with (
                _actor_system(settings, start_actors) as (system, members),
                _api(settings, system, orchestrators[0], members, sock),
            ):
                _log.info(
                    "node.started",
                    node=settings.node.id,
                    data_dir=settings.node.data_dir,
                    store=settings.store.backend,
                    events=settings.events.backend,
                )
                if started is not None:
                    started.set()
                await stop.wait()
                _log.info("node.stopping", node=settings.node.id)
        finally:
            await events.close()
    finally:
        await store.close()


async def start_storage(
    system: ActorSystem, services: Services, settings: Settings
) -> StorageService:
    """The storage pools of ``[storage]`` (of this node's datacenter when its capabilities
    name one), or the demo datacenter's simulated pool when none is configured."""
    from actors.storage import StorageService, demo_pool

    pools = list(settings.storage.pools)
    if not pools and settings.demo.enabled:
        demo = demo_pool(settings.storage, settings.demo.datacenter)
        pools = [demo] if demo is not None else []
    mine = settings.node.capabilities.get("datacenter")
    pools = [p for p in pools if mine is None or p.datacenter == mine]
    return await StorageService.start(
        system, services, settings.storage, pools, settings.node.data_dir
    )


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
    settings: Settings,
    system: ActorSystem,
    orchestrator: Orchestrator,
    members: Members,
    sock: socket.socket | None,
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
    runner = await start_api(gateway, sock)
    try:
        yield
    finally:
        await runner.cleanup()


def serve(config: str | None = None) -> int:
    """Entry point of ``cloudcore serve``: run until SIGINT or SIGTERM.

    Exit codes: 0 stopped by a signal after a clean start, 1 a backend could not be reached,
    2 bad configuration (a setting, a short admin token, a port that cannot be bound) or a
    schema this code does not know, 128 + the signal's number when a signal ended a start."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        configure_logging()
        _log.error("config.invalid", error=str(exc))
        return 2
    configure_logging(settings.log.level, settings.log.format)
    interrupted: list[int] = []
    try:
        if settings.api.enabled:  # a bad admin token stops the node before it starts anything
            from cloudcore.app.gateway.bootstrap import admin_token_from

            admin_token_from(os.environ)
        asyncio.run(_main(settings, interrupted))
    except ConfigError as exc:
        _log.error("config.invalid", error=str(exc))
        return 2
    except SchemaMismatch as exc:
        _log.error("store.schema_mismatch", error=str(exc))
        return 2
    except BackendUnavailable as exc:
        _log.error("node.backend_unavailable", error=str(exc))
        return 1
    except (asyncio.CancelledError, KeyboardInterrupt):
        signum = interrupted[0] if interrupted else signal.SIGINT
        _log.warning("node.interrupted", signal=signal.Signals(signum).name)
        return 128 + signum
    return 0


async def _main(settings: Settings, interrupted: list[int]) -> None:
    """Run the node; the first SIGINT/SIGTERM stops a started node gracefully, a signal during
    the start (which may wait long on a backend) or a second signal cancels it outright: a
    signal always ends the process."""
    stop = asyncio.Event()
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def cancel_until_done() -> None:
        # A library may swallow one cancellation (redis-py does while it opens a connection):
        # cancel again until the start has really ended.
        if not main.done():
            main.cancel()
            loop.call_later(0.5, cancel_until_done)

    def on_signal(signum: int) -> None:
        if started.is_set() and not stop.is_set():
            stop.set()
            return
        interrupted.append(signum)
        cancel_until_done()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await run_node(settings, stop, started)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
