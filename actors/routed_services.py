"""Template conversions and network changes routed to the node that owns a datacenter (see
:mod:`actors.routing` for the port and the ownership it goes by).

A conversion is still written PENDING in the store first (nothing is lost if its owner dies
before it claims it: the converter's periodic claim and its restart from the store stay the
crash-recovery path); then the owner's port is asked to have the datacenter's converter claim it
at once (:class:`RoutedConvert`). A RUNNING conversion is cancelled by the node that runs it
(:class:`RoutedCancelConversion`). A network created or deleted, a NIC added or removed, a public
address attached or detached is written with its event as before (each DHCP server's resync
catches what it missed); then the owner of the network's datacenter is called to reload that
network's DHCP configuration now (:class:`RoutedNetworkChange`).

Each is refused with DatacenterUnavailable (503 with Retry-After at the API) before anything is
written when the datacenter's owner is down. A call that fails after the write is not an error
to the caller (the change is committed and the owner's store claim or resync catches it up): it
is logged.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from actors.converter import PollConversions, cancel_conversion
from actors.dhcp import NicsChanged
from actors.network import SyncDhcp
from cloudcore.errors import CloudcoreError, DatacenterUnavailable, NotFound, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorRef, Message
from cloudcore.store.records import Datacenter, Task, TaskState

if TYPE_CHECKING:
    from actors.orchestrator import Orchestrator

__all__ = [
    "DHCP",
    "ConversionRoute",
    "RoutedCancelConversion",
    "RoutedConvert",
    "RoutedNetworkChange",
    "ServiceMessage",
    "cancel_routed",
    "conversion_route",
    "network_route",
    "run_service",
    "send_conversion",
    "send_network_change",
]

_log = get_logger("actors.routed_services")

#: Where a node's DHCP servers live (:class:`actors.dhcp.DhcpServers`), if it runs them.
DHCP = "/user/dhcp"


class RoutedConvert(Message, frozen=True, kw_only=True):
    """A conversion written PENDING for a template of this datacenter (or a shared one): the
    datacenter's converter claims it now. Replies RoutedReply(task) as it is after the claim
    (RUNNING, or PENDING while the converter's slots are full)."""

    datacenter_id: str
    task_id: str


class RoutedCancelConversion(Message, frozen=True, kw_only=True):
    """End a conversion this datacenter's converter runs, CANCELLED. Replies RoutedReply(task)."""

    datacenter_id: str
    task_id: str


class RoutedNetworkChange(Message, frozen=True, kw_only=True):
    """A network of the datacenter changed (``kind``: ``network.created``, ``network.deleted``,
    ``nic.added``, ``nic.removed``): its DHCP server reloads its configuration (or starts or
    stops) now. Replies RoutedReply() once its hosts file is rewritten from the store (at once
    if the node runs no DHCP server for it)."""

    datacenter_id: str
    network_id: str
    kind: str


ServiceMessage = RoutedConvert | RoutedCancelConversion | RoutedNetworkChange


async def run_service(orchestrator: Orchestrator, message: ServiceMessage) -> Task | None:
    """On the owner: run a routed conversion or network change with this node's actors."""
    services = orchestrator.services
    match message:
        case RoutedConvert(datacenter_id=datacenter_id, task_id=task_id):
            disks = services.disks
            converter = disks.converters.get(datacenter_id) if disks is not None else None
            if converter is None:
                raise DatacenterUnavailable(
                    f"datacenter {datacenter_id} runs no converter on this node yet; the "
                    f"conversion {task_id} waits in the store"
                )
            await converter.ask(PollConversions())
            _log.info("template.convert_routed", task_id=task_id, datacenter_id=datacenter_id)
            task: Task = await services.store.get(Task, task_id)
            return task
        case RoutedCancelConversion(task_id=task_id):
            task = await services.store.get(Task, task_id)
            return await cancel_conversion(services, task)
        case RoutedNetworkChange(network_id=network_id, kind=kind):
            try:
                dhcp = orchestrator.system.lookup(DHCP)
            except NotFound:
                return None  # this node serves no DHCP ([network] dhcp = false)
            await dhcp.ask(NicsChanged(kind=kind, network_id=network_id))
            if kind != "network.deleted":  # its hosts file rewritten before the reply
                with contextlib.suppress(NotFound):  # no bridge: no DHCP server for it
                    await orchestrator.system.lookup(f"{DHCP}/{network_id}").ask(SyncDhcp())
            _log.info("network.change_routed", network_id=network_id, kind=kind)
            return None


# ------------------------------------------------------------------ the caller's side


class ConversionRoute:
    """Where a conversion goes: the owner's port of ``datacenter_id`` (None: a converter of
    this node, told directly)."""

    def __init__(self, datacenter_id: str | None, port: ActorRef[Any] | None) -> None:
        self.datacenter_id = datacenter_id
        self.port = port


async def conversion_route(
    orchestrator: Orchestrator, datacenter_id: str | None
) -> ConversionRoute:
    """The route of a conversion of a template of ``datacenter_id`` (None: a shared template,
    converted by a converter of this node if it runs one, else by the first datacenter whose
    owner is up). DatacenterUnavailable if no node that could convert it is up: asked before
    the conversion is written."""
    if datacenter_id is not None:
        return ConversionRoute(datacenter_id, await orchestrator.port_of(datacenter_id))
    disks = orchestrator.services.disks
    if disks is not None and disks.converters:
        return ConversionRoute(None, None)
    refused: DatacenterUnavailable | None = None
    page = await orchestrator.store.list(Datacenter, limit=500)
    for datacenter in sorted(page.items, key=lambda d: d.id):
        try:
            port = await orchestrator.port_of(datacenter.id)
        except DatacenterUnavailable as exc:
            refused = exc
            continue
        return ConversionRoute(datacenter.id, port)
    raise refused or DatacenterUnavailable("no datacenter runs a converter; retry")


async def send_conversion(orchestrator: Orchestrator, route: ConversionRoute, task: Task) -> Task:
    """The conversion ``task`` (written PENDING) to its converter: the owner's port asked (the
    task as the claim left it), or this node's converters told (the task as written)."""
    if route.port is None:
        disks = orchestrator.services.disks
        if disks is not None:
            for datacenter_id, converter in list(disks.converters.items()):
                if route.datacenter_id in (None, datacenter_id):
                    converter.tell(PollConversions())
        return task
    assert route.datacenter_id is not None
    try:
        reply = await route.port.ask(
            RoutedConvert(datacenter_id=route.datacenter_id, task_id=task.id)
        )
    except CloudcoreError as exc:  # written: the owner's converter claims it from the store
        _log.warning("template.convert_unrouted", task_id=task.id, error=describe(exc))
        return task
    claimed: Task = reply.task
    return claimed


async def cancel_routed(orchestrator: Orchestrator, task: Task) -> Task:
    """Cancel the conversion ``task``: a RUNNING one by the owner of the datacenter that runs
    it (DatacenterUnavailable if that owner is down), else here."""
    datacenter_id = task.data.get("datacenter_id")
    if task.state is TaskState.RUNNING and isinstance(datacenter_id, str):
        port = await orchestrator.port_of(datacenter_id)
        if port is not None:
            message = RoutedCancelConversion(datacenter_id=datacenter_id, task_id=task.id)
            cancelled: Task = (await port.ask(message)).task
            return cancelled
    return await cancel_conversion(orchestrator.services, task)


async def network_route(orchestrator: Orchestrator, datacenter_id: str) -> ActorRef[Any] | None:
    """The owner's port for a change of a network of ``datacenter_id`` (None: it runs here, or
    there is no cluster); DatacenterUnavailable if its owner is down. Asked before writing."""
    return await orchestrator.port_of(datacenter_id)


async def send_network_change(
    port: ActorRef[Any] | None, datacenter_id: str, network_id: str, kind: str
) -> None:
    """Call the owner to reload ``network_id``'s DHCP configuration after a written change
    (nothing to do without a port: this node's DHCP servers follow the event)."""
    if port is None:
        return
    message = RoutedNetworkChange(datacenter_id=datacenter_id, network_id=network_id, kind=kind)
    try:
        await port.ask(message)
    except CloudcoreError as exc:  # written with its event: the owner's resync catches it up
        _log.warning("network.change_unrouted", network_id=network_id, error=describe(exc))
