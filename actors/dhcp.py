"""The DHCP servers of a node: a :class:`~actors.network.NetworkActor` per network of the
datacenters the node runs (every datacenter when it names none), each with its dnsmasq.

The store is the truth; the event bus says when to look at it again. A ``nic.added`` or
``nic.removed`` event (written with the change, in its transaction, by whichever node made it)
tells that network's actor to sync its hosts file, so dnsmasq serves a new NIC within a loop
turn or two of the commit; ``network.created`` and ``network.deleted`` start and stop actors.
An event missed (the bus was down, the node was starting) is caught by each actor's periodic
resync, which also reconciles the hosts file with the store (see :mod:`actors.network`).

Networks without a ``bridge`` get no DHCP server: nothing on the node to serve them on.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, assert_never

from actors.network import DhcpOptions, DhcpStatus, GetDhcpStatus, NetworkActor, SyncDhcp
from actors.supervision import refusals_resume
from cloudcore.config import NetworkSettings
from cloudcore.errors import BusClosed, NotFound, PositionExpired
from cloudcore.events import EventBus
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message, SupervisorStrategy
from cloudcore.store import Store
from cloudcore.store.records import Network

__all__ = [
    "DhcpServers",
    "DhcpServersMessage",
    "GetDhcpServers",
    "NicsChanged",
    "options_of",
]

_log = get_logger("actors.dhcp")
_FOLLOWED = ("nic.added", "nic.removed", "network.created", "network.deleted")
_RETRY = 1.0


class NicsChanged(Message, frozen=True, kw_only=True):
    """The NICs of ``network_id`` changed (``kind`` the event's type): sync its DHCP server,
    or start or stop it. Told from the bus; asked by the datacenter's port when the change is
    routed to this node (:mod:`actors.routed_services`): replies None once handled."""

    kind: str
    network_id: str


class GetDhcpServers(Message, frozen=True, kw_only=True):
    """Answers the :class:`~actors.network.DhcpStatus` of every network served, by id."""


DhcpServersMessage = NicsChanged | GetDhcpServers


class DhcpServers(Actor[DhcpServersMessage]):
    #: A network's actor that keeps failing is restarted (it starts again from the store).
    supervisor_strategy = SupervisorStrategy(decider=refusals_resume, max_restarts=10, within=60.0)

    def __init__(
        self,
        store: Store,
        events: EventBus,
        options: DhcpOptions,
        datacenter: str | None = None,
    ) -> None:
        # ``datacenter``: the networks of these datacenters (comma-separated) only; None: all.
        self.store = store
        self.events = events
        self.options = options
        self.datacenter = datacenter
        self.follower: asyncio.Task[None] | None = None

    async def started(self) -> None:
        # The position first, then the networks: a change after the read is in the stream.
        try:
            after: str | None = await self.events.last_position()
        except Exception as exc:  # the bus is down: the actors' resync covers the gap
            _log.warning("dhcp.follow_failed", error=str(exc))
            after = None
        self.follower = asyncio.create_task(self._follow(after), name="dhcp.follow")
        cursor: str | None = None
        while True:
            page = await self.store.list(Network, after=cursor, limit=500)
            for network in page.items:
                self._serve(network)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor

    async def stopping(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.follower

    async def receive(self, message: DhcpServersMessage) -> Any:
        match message:
            case NicsChanged(kind=kind, network_id=network_id):
                await self._changed(kind, network_id)
            case GetDhcpServers():
                return await self._statuses()
            case _:
                assert_never(message)
        return None

    def _serve(self, network: Network) -> None:
        if not network.bridge or self.context.child(network.id) is not None:
            return
        if self.datacenter is not None and network.datacenter_id not in self.datacenter.split(","):
            return
        self.context.spawn(NetworkActor, self.store, network, self.options, name=network.id)

    async def _changed(self, kind: str, network_id: str) -> None:
        _log.debug("dhcp.network_changed", kind=kind, network_id=network_id)
        child = self.context.child(network_id)
        if kind == "network.deleted":
            if child is not None:
                self.context.stop(child)
        elif child is not None:
            child.tell(SyncDhcp())
        else:  # a new network, or one this node has not served yet
            with contextlib.suppress(NotFound):
                self._serve(await self.store.get(Network, network_id))

    async def _statuses(self) -> dict[str, DhcpStatus]:
        refs: list[ActorRef[Any]] = self.context.children
        answers = await asyncio.gather(
            *(ref.ask(GetDhcpStatus(), timeout=10) for ref in refs), return_exceptions=True
        )
        return {a.network_id: a for a in answers if isinstance(a, DhcpStatus)}

    async def _follow(self, after: str | None) -> None:
        """Tell this actor about every followed event after ``after``, until the bus closes."""
        ref = self.context.self_ref
        while True:
            try:
                async for event in self.events.subscribe(after=after, types=_FOLLOWED):
                    after = event.position
                    ref.tell(NicsChanged(kind=event.type, network_id=_network_of(event)))
            except BusClosed:
                return
            except PositionExpired:
                after = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus is down: the resync covers the gap
                _log.warning("dhcp.follow_failed", error=str(exc))
                await asyncio.sleep(_RETRY)


def _network_of(event: Any) -> str:
    network_id = event.data.get("network_id") if isinstance(event.data, dict) else None
    if isinstance(network_id, str):
        return network_id
    return str(event.subject).removeprefix("network/")


def options_of(settings: NetworkSettings, data_dir: str) -> DhcpOptions:
    """The :class:`DhcpOptions` of a node's ``[network]`` settings."""
    return DhcpOptions(
        state_dir=settings.dhcp_dir or str(Path(data_dir) / "dhcp"),
        binary=settings.dnsmasq,
        wrapper=tuple(settings.dhcp_wrapper),
        user=settings.dhcp_user or None,
        resync_interval=settings.dhcp_resync,
    )
