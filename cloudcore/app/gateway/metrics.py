"""Prometheus metrics of the gateway, in a registry of each application's own.

- ``cloudcore_http_request_duration_seconds{route,method,status}``: a histogram, observed by
  :func:`metrics_middleware` (the route is the template, ``/api/v1/vms/{vm_id}``, so ids do not
  explode the label space).
- ``cloudcore_actor_mailbox_depth{path}`` for actors down to the host level
  (``/user/dc/<dc>/<host>``), ``cloudcore_actor_mailbox_messages`` (every mailbox together),
  ``cloudcore_actors`` and ``cloudcore_actor_restarts_total{kind}``: read from
  ``system.tree()`` at scrape time. The restarts are those of the actors alive now, so the sum
  drops when a restarted actor stops; Prometheus' ``rate()`` reads that as a counter reset.
- ``cloudcore_tasks_finished_total{kind,state}``: counted from ``task.finished`` events by
  :func:`count_finished_tasks`, a background subscription running while the app serves; an
  event the bus delivers twice (same id) is counted once.
- ``cloudcore_vms{state}``, ``cloudcore_hosts{health}`` and ``cloudcore_volumes{state}``:
  ``store.count_by`` at scrape time, cached for :data:`STORE_COUNTS_TTL` seconds so a scrape
  storm costs the store three queries a TTL.
- ``cloudcore_network_addresses{network,state}``: per network, the addresses held (``used``)
  and those it could still hand out (``free``: not held, reserved, nor resting in
  quarantine), read with the counts above.
- ``cloudcore_storage_pool_mib{pool,kind}`` (kind ``total``, ``used``, ``limit``,
  ``committed``): the storage pools this node runs, asked of their actors with the counts.
- ``cloudcore_templates{state}`` and ``cloudcore_image_library_bytes{repository}`` /
  ``cloudcore_image_library_images{repository}``: templates by state, and what each image
  repository's library (``objects/``) allocates, read with the counts above. Conversions by
  outcome are ``cloudcore_tasks_finished_total{kind="template.convert",state}``.
- Mobility: ``cloudcore_migrations_total{outcome}`` (``vm.migrate`` tasks ended SUCCEEDED,
  FAILED or CANCELLED, aborts included), ``cloudcore_ha_restarts_total`` (HA VMs taken off a
  fenced host to be restarted elsewhere, from ``vm.ha_restart`` events) and
  ``cloudcore_hosts_fenced_total`` (``host.fenced``), counted with the tasks above;
  ``cloudcore_hosts_by_admin_state{admin_state}`` (ENABLED, DISABLED, the maintenance states)
  read with the store counts. A host's power is its ``cloudcore_hosts{health}``: FENCED is
  confirmed off.

Served by ``cloudcore.app.gateway.routes.metrics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloudcore import ipam
from cloudcore.app.gateway.context import GATEWAY, Gateway
from cloudcore.errors import BusClosed, CloudcoreError
from cloudcore.events import SeenIds, deduplicated
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorSystem
from cloudcore.store.records import (
    VM,
    AdminState,
    Host,
    HostHealth,
    Network,
    Template,
    TemplateState,
    VMState,
    Volume,
    VolumeState,
)

__all__ = [
    "METRICS",
    "STORE_COUNTS_TTL",
    "Metrics",
    "count_finished_tasks",
    "metrics_middleware",
]

#: The events counted into counters while the app serves.
_COUNTED = ("task.finished", "vm.ha_restart", "host.fenced")

_log = get_logger("cloudcore.app.gateway")

#: Seconds the VM and host counts of a scrape are reused by the next ones.
STORE_COUNTS_TTL = 2.0
#: Actors at most this many path segments deep get a mailbox gauge of their own
#: (``/user/dc/<datacenter>/<host>``: not one series per VM).
_PER_ACTOR_DEPTH = 4


class Metrics:
    """The metrics of one gateway application, in a registry of its own (so two gateways in
    one process, as in tests, do not collide). Without a gateway, only request latency."""

    def __init__(self, gateway: Gateway | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "cloudcore_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )
        self.tasks_finished = Counter(
            "cloudcore_tasks_finished",
            "Tasks finished since this gateway started, by kind and final state",
            ["kind", "state"],
            registry=self.registry,
        )
        self.migrations = Counter(
            "cloudcore_migrations",
            "VM migrations ended since this gateway started, by outcome (the task's state)",
            ["outcome"],
            registry=self.registry,
        )
        self.ha_restarts = Counter(
            "cloudcore_ha_restarts",
            "HA VMs of fenced hosts given a restart elsewhere since this gateway started",
            registry=self.registry,
        )
        self.hosts_fenced = Counter(
            "cloudcore_hosts_fenced",
            "Hosts fenced by HA since this gateway started",
            registry=self.registry,
        )
        self._counts = _StoreCounts(gateway) if gateway is not None else None
        if gateway is not None:
            self.registry.register(_ActorCollector(gateway.system))
        if self._counts is not None:
            self.registry.register(self._counts)

    async def exposition(self) -> bytes:
        """The registry in Prometheus' text format (refreshing the store counts if stale)."""
        if self._counts is not None:
            await self._counts.refresh()
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


class _ActorCollector(Collector):
    """Mailboxes, restarts and the number of actors, from one snapshot of the actor tree."""

    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "cloudcore_actor_mailbox_depth",
            "Messages waiting in an actor's mailbox (actors down to the host level)",
            labels=["path"],
        )
        restarts = CounterMetricFamily(
            "cloudcore_actor_restarts",
            "Restarts of the live actors, summed by actor kind (class)",
            labels=["kind"],
        )
        by_kind: dict[str, int] = {}
        actors = queued = 0
        for info in self._system.tree().walk():
            actors += 1
            queued += info.mailbox_depth
            by_kind[info.class_name] = by_kind.get(info.class_name, 0) + info.restarts
            if info.path.count("/") <= _PER_ACTOR_DEPTH:
                depth.add_metric([info.path], info.mailbox_depth)
        for kind, count in sorted(by_kind.items()):
            restarts.add_metric([kind], count)
        yield depth
        yield GaugeMetricFamily(
            "cloudcore_actor_mailbox_messages",
            "Messages waiting in all actors' mailboxes together",
            value=queued,
        )
        yield restarts
        yield GaugeMetricFamily("cloudcore_actors", "Actors alive in this node", value=actors)


class _StoreCounts(Collector):
    """VMs by state and hosts by health, as last read from the store (see :meth:`refresh`)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._vms: dict[str, int] = {}
        self._hosts: dict[str, int] = {}
        self._admin: dict[str, int] = {}
        self._volumes: dict[str, int] = {}
        self._pools: list[tuple[str, dict[str, int]]] = []
        self._addresses: dict[str, tuple[int, int]] = {}  # network id -> (used, free)
        self._templates: dict[str, int] = {}
        self._library: dict[str, tuple[int, int]] = {}  # repository -> (bytes, images)
        self._read_at = -STORE_COUNTS_TTL
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the counts again if they are older than the TTL; concurrent scrapes share one
        read. A store that cannot answer leaves the last counts (and is logged)."""
        async with self._lock:
            if time.monotonic() - self._read_at < STORE_COUNTS_TTL:
                return
            store = self._gateway.store
            try:
                self._vms = await store.count_by(VM, "state")
                self._hosts = await store.count_by(Host, "health")
                self._admin = await store.count_by(Host, "admin_state")
                self._volumes = await store.count_by(Volume, "state")
                storage = self._gateway.orchestrator.storage
                pools = [] if storage is None else await storage.pool_status()
                self._pools = [
                    (p.id, {"total": p.total_mib, "used": p.used_mib, "limit": p.limit_mib,
                            "committed": p.committed_mib})
                    for p in pools
                ]  # fmt: skip
                self._addresses = await self._network_addresses()
                self._templates = await store.count_by(Template, "state")
                self._library = await self._library_usage()
            except CloudcoreError as exc:
                _log.warning("metrics.store_unavailable", error=str(exc))
                return
            self._read_at = time.monotonic()

    async def _network_addresses(self) -> dict[str, tuple[int, int]]:
        store = self._gateway.store
        networks: list[Network] = []
        cursor: str | None = None
        while True:
            page = await store.list(Network, after=cursor, limit=1000)
            networks.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        taken: dict[str, list[str]] = {}
        used: dict[str, int] = {}
        for held in await store.list_ips(released=True):
            resting = held.released_at is not None
            taken.setdefault(held.network_id, []).append(held.address)  # quarantine too
            used[held.network_id] = used.get(held.network_id, 0) + (0 if resting else 1)
        # (addresses past their quarantine count as taken until reused: a slight under-count)
        return {
            n.id: (used.get(n.id, 0), ipam.free_count(n, taken.get(n.id, []))) for n in networks
        }

    async def _library_usage(self) -> dict[str, tuple[int, int]]:
        library = self._gateway.images
        if library is None:
            return {}
        names = await asyncio.to_thread(
            lambda: (
                sorted(p.name for p in library.root.iterdir() if p.is_dir())
                if library.root.is_dir()
                else []
            )
        )
        usage = {}
        for name in names:
            capacity = await library.repository(name).capacity()
            usage[name] = (capacity.library_bytes, capacity.images)
        return usage

    def _library_families(self) -> Iterator[Metric]:
        templates = GaugeMetricFamily("cloudcore_templates", "Templates by state", labels=["state"])
        for state in TemplateState:
            templates.add_metric([state.value], self._templates.get(state.value, 0))
        yield templates
        stored = GaugeMetricFamily(
            "cloudcore_image_library_bytes",
            "Bytes the image library's files allocate, by repository",
            labels=["repository"],
        )
        images = GaugeMetricFamily(
            "cloudcore_image_library_images",
            "Files in the image library, by repository",
            labels=["repository"],
        )
        for name, (size, count) in sorted(self._library.items()):
            stored.add_metric([name], size)
            images.add_metric([name], count)
        yield stored
        yield images

    def collect(self) -> Iterator[Metric]:
        yield from self._library_families()
        addresses = GaugeMetricFamily(
            "cloudcore_network_addresses",
            "Addresses of a network held (used) and still to hand out (free)",
            labels=["network", "state"],
        )
        for network_id, (used, free) in sorted(self._addresses.items()):
            addresses.add_metric([network_id, "used"], used)
            addresses.add_metric([network_id, "free"], free)
        yield addresses
        vms = GaugeMetricFamily("cloudcore_vms", "VMs by state", labels=["state"])
        for state in VMState:  # every state, so a state that empties shows 0, not a gap
            vms.add_metric([state.value], self._vms.get(state.value, 0))
        hosts = GaugeMetricFamily("cloudcore_hosts", "Hosts by health", labels=["health"])
        for health in HostHealth:
            hosts.add_metric([health.value], self._hosts.get(health.value, 0))
        admin = GaugeMetricFamily(
            "cloudcore_hosts_by_admin_state",
            "Hosts by what the operator allows (enabled, disabled, maintenance states)",
            labels=["admin_state"],
        )
        for admin_state in AdminState:
            admin.add_metric([admin_state.value], self._admin.get(admin_state.value, 0))
        volumes = GaugeMetricFamily("cloudcore_volumes", "Volumes by state", labels=["state"])
        for volume_state in VolumeState:
            volumes.add_metric([volume_state.value], self._volumes.get(volume_state.value, 0))
        pools = GaugeMetricFamily(
            "cloudcore_storage_pool_mib",
            "Storage pools: capacity, use, what overcommit allows and what is promised (MiB)",
            labels=["pool", "kind"],
        )
        for pool_id, figures in self._pools:
            for kind, value in figures.items():
                pools.add_metric([pool_id, kind], value)
        yield vms
        yield hosts
        yield admin
        yield volumes
        yield pools


async def count_finished_tasks(app: web.Application) -> AsyncIterator[None]:
    """An ``app.cleanup_ctx``: count ``task.finished``, ``vm.ha_restart`` and ``host.fenced``
    events into their counters from the app's start to its cleanup."""
    gateway, metrics = app[GATEWAY], app[METRICS]
    after = await gateway.events.last_position()  # from now, without missing the first ones
    counting = asyncio.create_task(_count(gateway, metrics, after), name="metrics.tasks")
    try:
        yield
    finally:
        counting.cancel()
        await asyncio.gather(counting, return_exceptions=True)


async def _count(gateway: Gateway, metrics: Metrics, after: str) -> None:
    seen = SeenIds()  # events come at least once: a copy is not counted again
    while True:
        try:
            events = gateway.events.subscribe(after=after, types=_COUNTED)
            async for event in deduplicated(events, seen):
                after = event.position
                _tally(metrics, event.type, event.data)
        except BusClosed:
            return  # the node is shutting down
        except CloudcoreError as exc:
            # PositionExpired (fell behind the retained history) or the bus failing: go on
            # from the present; the counts miss what was skipped.
            _log.warning("metrics.tasks_resubscribing", error=str(exc))
            await asyncio.sleep(1.0)
            after = await _last_position(gateway, after)


def _tally(metrics: Metrics, type: str, data: Mapping[str, Any]) -> None:
    if type == "vm.ha_restart":
        metrics.ha_restarts.inc()
    elif type == "host.fenced":
        metrics.hosts_fenced.inc()
    else:
        kind, state = str(data.get("kind", "unknown")), str(data.get("state", ""))
        metrics.tasks_finished.labels(kind, state).inc()
        if kind == "vm.migrate":
            metrics.migrations.labels(state).inc()


async def _last_position(gateway: Gateway, fallback: str) -> str:
    try:
        return await gateway.events.last_position()
    except CloudcoreError:
        return fallback


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        metrics = request.app.get(METRICS)
        if metrics is not None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics.request_seconds.labels(route, request.method, str(status)).observe(
                time.perf_counter() - started
            )
