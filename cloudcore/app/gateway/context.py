"""What the gateway's handlers reach: the orchestrator, the store, the event bus, settings,
and the cluster view."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from actors.image_import import ImageImporter
from cloudcore.app.gateway.auth import Principal, TokenCache
from cloudcore.app.gateway.consoles import ConsoleTickets
from cloudcore.app.gateway.ratelimits import Counters, RateLimiter
from cloudcore.cluster import Member
from cloudcore.config import ApiSettings, Settings
from cloudcore.events import EventBus
from cloudcore.images import ImageLibrary, QemuImg, host_cache_root, image_root
from cloudcore.runtime import ActorSystem
from cloudcore.runtime.introspection import ActorInfo
from cloudcore.store import Store

if TYPE_CHECKING:
    from actors.orchestrator import Orchestrator

__all__ = ["GATEWAY", "PRINCIPAL", "REQUEST_ID", "Gateway", "limit_counters", "limiters"]


@dataclass(slots=True)
class Gateway:
    """The node's services as the HTTP API sees them. One per application."""

    settings: Settings
    store: Store
    events: EventBus
    system: ActorSystem
    orchestrator: Orchestrator
    tokens: TokenCache
    limiter: RateLimiter
    #: The console tickets (``GET /vms/{id}/console``), in the store: any node spends one.
    consoles: ConsoleTickets
    #: The cluster view (ClusterNode.members) of a clustered node; a node on its own has none.
    members: Callable[[], Sequence[Member]] = field(default=lambda: ())
    #: Failed authentications by client address (``api.auth_failures_per_second``).
    failures: RateLimiter = field(default_factory=lambda: RateLimiter(5.0, 20, name="auth"))
    #: Where ``limiter`` and ``failures`` count (closed with the application).
    counters: Counters | None = None
    #: The image library (``[images]``), its qemu-img and the imports of this node (conversions
    #: run in the datacenters' converter actors).
    images: ImageLibrary | None = None
    qemu: QemuImg = field(default_factory=QemuImg)
    importer: ImageImporter | None = None
    #: The actor tree of another node of the cluster (ClusterNode.tree); None on its own.
    trees: Callable[[str, str], Awaitable[ActorInfo]] | None = None

    @classmethod
    def of(
        cls,
        settings: Settings,
        system: ActorSystem,
        orchestrator: Orchestrator,
        members: Callable[[], Sequence[Member]] | None = None,
    ) -> Gateway:
        """The gateway of a node running ``orchestrator`` (its store and event bus);
        ``members`` gives the cluster view when the node belongs to a cluster."""
        store = orchestrator.store
        disks = orchestrator.services.disks  # one library per node: they share its scratch
        images = (
            disks.library
            if disks is not None
            else ImageLibrary(image_root(settings), settings.node.id, host_cache_root(settings))
        )
        qemu = QemuImg(settings.images.qemu_img)
        counters = limit_counters(settings)
        limiter, failures = limiters(settings.api, counters)
        return cls(
            settings=settings,
            store=store,
            events=orchestrator.services.events,
            system=system,
            orchestrator=orchestrator,
            tokens=TokenCache(store, settings.api.token_cache_seconds),
            limiter=limiter,
            members=members or (lambda: ()),
            failures=failures,
            counters=counters,
            images=images,
            qemu=qemu,
            importer=ImageImporter(
                store, images, qemu, settings.images, orchestrator.services.waiters
            ),
            consoles=ConsoleTickets(store, settings.api.console_ticket_seconds),
        )


def limit_counters(settings: Settings) -> Counters:
    """Where this node's API counts its limits: Redis (``events.redis_url``, shared with every
    API process and node on it) when ``api.limits_backend`` is "redis", or "auto" with the
    Redis event bus; else this process's memory."""
    backend = settings.api.limits_backend
    if backend == "redis" or (backend == "auto" and settings.events.backend == "redis"):
        return Counters(settings.events.redis_url, settings.api.limits_key_prefix)
    return Counters()


def limiters(api: ApiSettings, counters: Counters) -> tuple[RateLimiter, RateLimiter]:
    """The per-token request limit and the per-address failed-authentication limit."""
    return (
        RateLimiter(api.rate_limit, api.rate_burst, counters, name="requests"),
        RateLimiter(api.auth_failures_per_second, api.auth_failure_burst, counters, name="auth"),
    )


GATEWAY = web.AppKey("gateway", Gateway)
#: The caller of a request, once authenticated.
PRINCIPAL = web.RequestKey("principal", Principal)
#: The id of a request: the caller's X-Request-Id if sane, else a new one.
REQUEST_ID = web.RequestKey("request_id", str)
