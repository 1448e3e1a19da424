"""A cloudcore node process: settings, logging, store, event bus, the actor system with the
orchestrator on it, and a clean stop on a signal.

This module is the composition root of the all-in-one node (it sits at the top, beside the CLI
and the gateway, so it may import every layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from cloudcore.app.profiles import Plan, plan_of
from cloudcore.config import Settings, load_settings
from cloudcore.errors import BackendUnavailable, ConfigError, SchemaMismatch
from cloudcore.logging import configure_logging, get_logger
from cloudcore.runtime import ActorSystem

if TYPE_CHECKING:
    from actors.orchestrator import Orchestrator
    from actors.services import Services
    from actors.storage import StorageService
    from cloudcore.app.gateway import Gateway
    from cloudcore.cluster import ClusterNode, Member

__all__ = ["run_node", "serve", "with_profile"]

_log = get_logger("cloudcore.app.node")

#: The cluster view the gateway shows at /system/nodes.
Members = Callable[[], "Sequence[Member]"]


def _alone() -> Sequence[Member]:
    return ()


async def run_node(
    settings: Settings, stop: asyncio.Event, started: asyncio.Event | None = None
) -> None:
    """Run a node until ``stop`` is set, then shut it down gracefully. ``started`` is set once
    the node serves. A failure to start stops what had started before it is raised. What runs
    is the node's profile (:func:`cloudcore.app.profiles.plan_of`; ConfigError if it cannot)."""
    from cloudcore.app.gateway.app import listen

    plan = plan_of(settings)
    await asyncio.to_thread(private_dir, Path(settings.node.data_dir))
    sock = listen(settings.api) if plan.api else None  # a taken port fails first
    try:
        await _run(settings, plan, stop, started, sock)
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
    plan: Plan,
    stop: asyncio.Event,
    started: asyncio.Event | None,
    sock: socket.socket | None,
) -> None:
    from actors.registration import bootstrap_demo
    from actors.services import Services
    from actors.template_disks import TemplateDisks
    from cloudcore.events import open_event_bus
    from cloudcore.images import ImageLibrary, QemuImg, host_cache_root, image_root
    from cloudcore.store import open_store

    store = await open_store(settings)
    try:
        events = await open_event_bus(settings)
        try:
            if plan.api and settings.demo.enabled:
                await bootstrap_demo(store, settings)
            if plan.cluster_services:
                # Usage drifts only by a bug or an old release's half-done create: fix it
                # before taking requests (logged as quota.drift_fixed), and forget expired keys.
                await store.reconcile_quotas()
                await store.purge_idempotency_keys()
            library = ImageLibrary(
                image_root(settings), settings.node.id, host_cache_root(settings)
            )
            disks = TemplateDisks(
                store, library, QemuImg(settings.images.qemu_img), settings.images
            )
            await disks.sweep()  # the bases no VM uses any more
            services = Services(store, events, settings.orchestrator, disks=disks)
            async with contextlib.AsyncExitStack() as stack:
                await _start_groups(stack, settings, plan, services, sock)
                _log.info(
                    "node.started",
                    node=settings.node.id,
                    profile=plan.profile,
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


async def _start_groups(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    plan: Plan,
    services: Services,
    sock: socket.socket | None,
) -> None:
    """Start the service groups ``plan`` names; ``stack`` stops them in the reverse order
    (the API first, then the datacenters, then the actor system)."""
    from actors.dhcp import DhcpServers, options_of
    from actors.orchestrator import Orchestrator
    from actors.routing import PORT, DatacenterPort, Routes
    from cloudcore.events.relay import OutboxRelayActor

    leased = plan.runs_datacenters and settings.store.backend == "postgres"
    made: list[Orchestrator] = []

    async def start_actors(system: ActorSystem) -> None:
        # Events are written with their changes; each node publishes those it writes at once
        # (a relay is woken by its own process's writes; several relays only duplicate).
        system.spawn(OutboxRelayActor, services.store, services.events, name="outbox-relay")
        only = None if plan.datacenters is None else ",".join(sorted(plan.datacenters))
        spawn = plan.runs_datacenters and not leased  # by lease: once this node holds one
        made.append(await Orchestrator.start(system, services, only, spawn=spawn))
        if plan.api or plan.runs_datacenters:  # pools run with their datacenters
            made[0].storage = await start_storage(system, services, settings, plan)
        if plan.runs_datacenters and settings.network.dhcp:  # a dnsmasq per network of its DCs
            dhcp = options_of(settings.network, settings.node.data_dir)
            system.spawn(DhcpServers, services.store, services.events, dhcp, only, name="dhcp")
        if plan.runs_datacenters and settings.transport.kind == "amqp":
            system.spawn(DatacenterPort, made[0], name=PORT.rsplit("/", 1)[-1])

    system, cluster = await stack.enter_async_context(_actor_system(settings, start_actors))
    orchestrator = made[0]
    members: Members = _alone
    if cluster is not None:
        members = cluster.members
        cluster.info = NodeInfo(plan.profile, orchestrator, services)
        orchestrator.routes = Routes(services.store, cluster.ref, _status_of(cluster))
        if orchestrator.storage is not None:  # volumes of other nodes' datacenters: routed
            orchestrator.storage.port_of = orchestrator.port_of
    if leased:
        await stack.enter_async_context(_datacenter_leases(settings, plan, orchestrator, cluster))
    if plan.api and cluster is not None:
        await stack.enter_async_context(_finished_tasks(services))
    api = _api(settings, plan, system, orchestrator, members, sock)
    gateway_of = await stack.enter_async_context(api)
    if gateway_of is not None and cluster is not None:
        gateway_of.trees = cluster.tree


class NodeInfo:
    """What a node says of itself in its heartbeats, for the console's ``nodes``: its profile,
    the datacenters it runs, its CPU use since the last heartbeat (% of one core) and the
    tasks its actors drive now."""

    def __init__(self, profile: str, orchestrator: Orchestrator, services: Services) -> None:
        self.profile = profile
        self.orchestrator = orchestrator
        self.services = services
        self._cpu = time.process_time()
        self._at = time.monotonic()

    def __call__(self) -> dict[str, str]:
        cpu, at = time.process_time(), time.monotonic()
        load = 100.0 * (cpu - self._cpu) / max(at - self._at, 1e-6)
        self._cpu, self._at = cpu, at
        return {
            "profile": self.profile,
            "datacenters": ",".join(self.orchestrator.running()),
            "cpu_percent": f"{load:.1f}",
            "tasks": str(len(self.services.runners)),
        }


def _status_of(cluster: ClusterNode) -> Callable[[str], str | None]:
    def status(node: str) -> str | None:
        return next((m.status for m in cluster.members() if m.node == node), None)

    return status


@contextlib.asynccontextmanager
async def _datacenter_leases(
    settings: Settings, plan: Plan, orchestrator: Orchestrator, cluster: ClusterNode | None
) -> AsyncIterator[None]:
    """The leases of the datacenters this node may run (see actors.ownership): taken now if
    free, kept, and released (the datacenters stopped first) when the node stops."""
    from actors.ownership import DatacenterLeases
    from actors.paging import all_records
    from cloudcore.store.records import Datacenter

    store = orchestrator.store

    async def wanted() -> list[str]:
        ids = [dc.id async for dc in all_records(store, Datacenter)]
        return ids if plan.datacenters is None else [i for i in ids if i in plan.datacenters]

    with site_lock(Path(settings.node.data_dir)) as site:
        leases = DatacenterLeases(
            store,
            settings.node.id,
            ttl=settings.cluster.lease_seconds,
            wanted=wanted,
            run=orchestrator.run_datacenter,
            drop=orchestrator.drop_datacenter,
            healthy=(lambda: cluster.connected) if cluster is not None else (lambda: True),
            site=site,
        )
        await leases.start()
        orchestrator.claim = leases.claim
        try:
            yield
        finally:
            orchestrator.claim = None
            await leases.stop()


@contextlib.contextmanager
def site_lock(data_dir: Path) -> Iterator[str | None]:
    """While no other process holds it, the exclusive lock of ``data_dir`` (``node.lock``),
    and a name of this site (this machine and data directory). With it, a restarted node
    takes back at once the leases its crashed process held there (the kernel frees the lock
    when a process dies, so their holder has ended; see actors.ownership). None when another
    process holds the lock (a second node started on the same data directory): that one
    waits for leases to expire, as a peer does."""
    path = data_dir / "node.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log.warning("node.data_dir_in_use", path=str(path), leases="waited out")
            yield None
            return
        where = f"{socket.gethostname()}:{data_dir.resolve()}"
        yield hashlib.sha256(where.encode()).hexdigest()[:12]
    finally:
        os.close(fd)  # frees the lock


@contextlib.asynccontextmanager
async def _finished_tasks(services: Services) -> AsyncIterator[None]:
    """Waiters of this node learn of tasks that other nodes end, from the bus."""
    from actors.routing import FinishedTasks

    finished = FinishedTasks(services.events, services.store, services.waiters)
    finished.start()
    try:
        yield
    finally:
        await finished.stop()


async def start_storage(
    system: ActorSystem, services: Services, settings: Settings, plan: Plan | None = None
) -> StorageService:
    """The storage pools of ``[storage]`` of the datacenters this node may run (none on a
    server node), or the demo datacenters' simulated pools when none is configured (of the
    first demo datacenter only, on a monolithic node that runs every datacenter)."""
    from actors.storage import StorageService, demo_pool

    plan = plan or plan_of(settings)
    pools = list(settings.storage.pools)
    if not pools and settings.demo.enabled:
        demo = [d.strip() for d in settings.demo.datacenter.split(",") if d.strip()]
        if plan.datacenters is None:
            demo = demo[:1]
        made = (demo_pool(settings.storage, dc) for dc in demo)
        pools = [p for p in made if p is not None]
    mine = plan.datacenters
    pools = [p for p in pools if mine is None or p.datacenter in mine]
    return await StorageService.start(
        system, services, settings.storage, pools, settings.node.data_dir
    )


@contextlib.asynccontextmanager
async def _actor_system(
    settings: Settings, start_actors: Callable[[ActorSystem], Awaitable[None]]
) -> AsyncIterator[tuple[ActorSystem, ClusterNode | None]]:
    """The node's actor system with its actors started, and its cluster node: none with the
    local transport, or joined to the cluster (transport.kind = "amqp"), where the actors
    start before the node takes commands from its queue."""
    from actors.supervision import DOMAIN_STRATEGY

    # Top-level actors (the datacenter port, console streams) answer refusals as the domain's
    # actors do: a refusal is no fault, and two in a row must not stop them.
    if settings.transport.kind == "amqp":
        from cloudcore.cluster import ClusterNode

        setup = lambda node: start_actors(node.system)  # noqa: E731
        async with ClusterNode(settings, setup=setup, user_strategy=DOMAIN_STRATEGY) as node:
            yield node.system, node
    else:
        async with ActorSystem(
            settings.node.id, settings.runtime, user_strategy=DOMAIN_STRATEGY
        ) as system:
            await start_actors(system)
            yield system, None


@contextlib.asynccontextmanager
async def _api(
    settings: Settings,
    plan: Plan,
    system: ActorSystem,
    orchestrator: Orchestrator,
    members: Members,
    sock: socket.socket | None,
) -> AsyncIterator[Gateway | None]:
    """The HTTP API of the node (its profile's and ``api.enabled``), with the first admin
    token made if the store has none; its gateway (None without an API)."""
    if not plan.api:
        yield None
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
        yield gateway
    finally:
        await runner.cleanup()


def serve(config: str | None = None, profile: str | None = None) -> int:
    """Entry point of ``cloudcore serve``: run until SIGINT or SIGTERM.

    Exit codes: 0 stopped by a signal after a clean start, 1 a backend could not be reached,
    2 bad configuration (a setting, a short admin token, a port that cannot be bound) or a
    schema this code does not know, 128 + the signal's number when a signal ended a start."""
    from cloudcore.app.workers import Workers, check_workers, is_worker

    try:
        settings = with_profile(load_settings(config), profile)
        plan = plan_of(settings)
        check_workers(settings, plan)
    except ConfigError as exc:
        configure_logging()
        _log.error("config.invalid", error=str(exc))
        return 2
    configure_logging(settings.log.level, settings.log.format)
    interrupted: list[int] = []
    try:
        if plan.api:  # a bad admin token stops the node before it starts anything
            from cloudcore.app.gateway.bootstrap import admin_token_from

            admin_token_from(os.environ)
        workers: list[Workers] = []

        def start_workers() -> None:
            # Once this node has started: its first start made the admin and the demo alone.
            if plan.api and settings.api.workers > 1 and not is_worker():
                workers.append(Workers.start(settings, config))

        try:
            asyncio.run(_main(settings, interrupted, start_workers))
        finally:
            for group in workers:
                group.stop()
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


def with_profile(settings: Settings, profile: str | None) -> Settings:
    """``settings`` with ``node.profile`` set to ``profile`` (``serve --profile``), if given;
    ConfigError if it is not a profile."""
    if profile is None:
        return settings
    try:
        node = msgspec.structs.replace(settings.node, profile=profile)
    except ValueError as exc:
        raise ConfigError(f"--profile: {exc}") from None
    return msgspec.structs.replace(settings, node=node)


async def _main(
    settings: Settings, interrupted: list[int], on_started: Callable[[], None] = lambda: None
) -> None:
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

    async def when_started() -> None:
        await started.wait()
        on_started()

    waiter = loop.create_task(when_started())
    try:
        await run_node(settings, stop, started)
    finally:
        waiter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
