"""What the gateway's handlers reach: the orchestrator, the store, the event bus, settings,
and the cluster view."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from actors.image_import import ImageImporter
from cloudcore.app.gateway.auth import Principal, RateLimiter, TokenCache
from cloudcore.app.gateway.consoles import ConsoleTickets
from cloudcore.cluster import Member
from cloudcore.config import Settings
from cloudcore.events import EventBus
from cloudcore.images import ImageLibrary, QemuImg, image_root
from cloudcore.runtime import ActorSystem
from cloudcore.runtime.introspection import ActorInfo
from cloudcore.store import Store

if TYPE_CHECKING:
    from actors.orchestrator import Orchestrator

__all__ = ["GATEWAY", "PRINCIPAL", "REQUEST_ID", "Gateway"]


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
    failures: RateLimiter = field(default_factory=lambda: RateLimiter(5.0, 20))
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
            else ImageLibrary(image_root(settings), settings.node.id)
        )
        qemu = QemuImg(settings.images.qemu_img)
        return cls(
            settings=settings,
            store=store,
            events=orchestrator.services.events,
            system=system,
            orchestrator=orchestrator,
            tokens=TokenCache(store, settings.api.token_cache_seconds),
            limiter=RateLimiter(settings.api.rate_limit, settings.api.rate_burst),
            members=members or (lambda: ()),
            failures=RateLimiter(
                settings.api.auth_failures_per_second, settings.api.auth_failure_burst
            ),
            images=images,
            qemu=qemu,
            importer=ImageImporter(
                store, images, qemu, settings.images, orchestrator.services.waiters
            ),
            consoles=ConsoleTickets(store, settings.api.console_ticket_seconds),
        )


GATEWAY = web.AppKey("gateway", Gateway)
#: The caller of a request, once authenticated.
PRINCIPAL = web.RequestKey("principal", Principal)
#: The id of a request: the caller's X-Request-Id if sane, else a new one.
REQUEST_ID = web.RequestKey("request_id", str)
