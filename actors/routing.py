"""Operations on a datacenter that runs on another node: routed to its owner through the
cluster, by the datacenter's lease. (Template conversions and network changes: their messages
and their running are in :mod:`actors.routed_services`; this port runs them too.)

The node that holds a datacenter's lease (:mod:`actors.ownership`) runs a
:class:`DatacenterPort` at :data:`PORT`; a node that does not run the datacenter (a server
node, or a node of another datacenter) asks that port (:class:`Routes`), which runs the
operation with its own orchestrator, where the datacenter's actors are. If the datacenter has no
owner whose lease runs, or the owner's node is down, the operation is refused at once with
DatacenterUnavailable (a 503 with Retry-After at the API) before anything is written.

Replies come back as the ask's answer; a task's progress and end as events (the owners write
them to the store's outbox; :class:`FinishedTasks` resolves this node's waiters from the bus).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, assert_never

from actors.console_relay import ConsoleOpened, OwnerStream, connect
from actors.host_lifecycle import HostOperation
from actors.lifecycle import Operation
from actors.messages import Deploy, RecoverVerb, RequestOperation, Snapshot, SweepReport
from actors.operations import OperationParams
from actors.ownership import lease_name
from actors.routed_services import (
    RoutedCancelConversion,
    RoutedConvert,
    RoutedNetworkChange,
    ServiceMessage,
    run_service,
)
from actors.volume_messages import PoolStatus, VolumeParams
from cloudcore.errors import (
    BackendUnavailable,
    BusClosed,
    DatacenterUnavailable,
    NotFound,
    describe,
)
from cloudcore.events import EventBus
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store import Store
from cloudcore.store.records import VM, Host, IdempotencyKey, Task, Volume, VolumeSnapshot
from hypervisor_drivers.types import ConsoleEndpoint, ConsoleKind

if TYPE_CHECKING:
    from actors.journal import TaskWaiters
    from actors.orchestrator import Orchestrator

__all__ = [
    "PORT",
    "DatacenterPort",
    "FinishedTasks",
    "PortMessage",
    "RoutedAbort",
    "RoutedAddHost",
    "RoutedAdminState",
    "RoutedConsole",
    "RoutedConsoleOpen",
    "RoutedDeploy",
    "RoutedMaintain",
    "RoutedOperate",
    "RoutedPools",
    "RoutedRecover",
    "RoutedReply",
    "RoutedSetHA",
    "RoutedSnapshots",
    "RoutedSweep",
    "RoutedVolumeCreate",
    "RoutedVolumeOperate",
    "RoutedVolumeRecover",
    "Routes",
]

_log = get_logger("actors.routing")

#: Where the port of a node that runs datacenters lives.
PORT = "/user/datacenter-port"


class RoutedDeploy(Message, frozen=True, kw_only=True):
    """A deploy written RUNNING (the VM and its task) for a datacenter of this node: run it.
    A tell; if it is lost, the datacenter's watchdog resumes the task as one nothing drives."""

    datacenter_id: str
    task: Task
    vm: VM


class RoutedOperate(Message, frozen=True, kw_only=True):
    """Start ``operation`` on a VM of a datacenter of this node. Replies RoutedReply(task).
    ``host_id``: where the sender saw the VM (its actor is asked there without reading the
    VM again; read if it has moved since)."""

    datacenter_id: str
    vm_id: str
    operation: Operation
    params: OperationParams | None = None
    host_id: str | None = None


class RoutedRecover(Message, frozen=True, kw_only=True):
    """An operator's verdict on a VM in ERROR. Replies RoutedReply(task or None)."""

    datacenter_id: str
    vm_id: str
    verb: RecoverVerb


class RoutedAdminState(Message, frozen=True, kw_only=True):
    """Enable or disable a host, or cancel its maintenance. Replies RoutedReply(host)."""

    datacenter_id: str
    host_id: str
    operation: HostOperation


class RoutedAddHost(Message, frozen=True, kw_only=True):
    """Manage a host just registered in the store. Replies RoutedReply()."""

    datacenter_id: str
    host_id: str


class RoutedSweep(Message, frozen=True, kw_only=True):
    """Compare a host's hypervisor with the store. Replies RoutedReply(report)."""

    datacenter_id: str
    host_id: str


class RoutedAbort(Message, frozen=True, kw_only=True):
    """Stop a migration in flight. Replies RoutedReply(task)."""

    datacenter_id: str
    task_id: str
    reason: str


class RoutedMaintain(Message, frozen=True, kw_only=True):
    """Put a host in maintenance (drained by migration). Replies RoutedReply(task)."""

    datacenter_id: str
    host_id: str


class RoutedSetHA(Message, frozen=True, kw_only=True):
    """Whether HA restarts a VM elsewhere, and how early. Replies RoutedReply(vm)."""

    datacenter_id: str
    vm_id: str
    ha: bool
    priority: int


class RoutedSnapshots(Message, frozen=True, kw_only=True):
    """A VM's snapshots as its hypervisor has them. Replies RoutedReply(snapshots)."""

    datacenter_id: str
    vm_id: str


class RoutedConsole(Message, frozen=True, kw_only=True):
    """Where a VM's console is, as its host's node reaches it. Replies RoutedReply(console)."""

    datacenter_id: str
    vm_id: str
    kind: ConsoleKind


class RoutedConsoleOpen(Message, frozen=True, kw_only=True):
    """Open a VM's console here and relay it to ``peer``, the API node's side of session
    ``session`` (see actors.console_relay). Replies ConsoleOpened; BackendUnavailable when the
    console cannot be reached, Conflict when the VM's serial console is in use."""

    datacenter_id: str
    vm_id: str
    session: str
    endpoint: ConsoleEndpoint
    peer: ActorRef[Any]


class RoutedVolumeCreate(Message, frozen=True, kw_only=True):
    """Create a volume on a pool of the datacenter (its source, if any, by id: a snapshot or
    a volume the caller may use). Replies RoutedReply(task)."""

    datacenter_id: str
    tenant_id: str
    name: str
    size_gib: int
    tier: str
    claim: IdempotencyKey | None = None
    snapshot_id: str | None = None
    source_volume_id: str | None = None


class RoutedVolumeOperate(Message, frozen=True, kw_only=True):
    """Start an operation on a volume of the datacenter. Replies RoutedReply(task)."""

    datacenter_id: str
    volume_id: str
    params: VolumeParams


class RoutedVolumeRecover(Message, frozen=True, kw_only=True):
    """An operator's verdict on a volume in ERROR. Replies RoutedReply(task or volume)."""

    datacenter_id: str
    volume_id: str
    verb: RecoverVerb


class RoutedPools(Message, frozen=True, kw_only=True):
    """The storage pools of the datacenter as they are now. Replies RoutedReply(pools)."""

    datacenter_id: str


class RoutedReply(Message, frozen=True, kw_only=True):
    task: Task | None = None
    host: Host | None = None
    vm: VM | None = None
    volume: Volume | None = None
    report: SweepReport | None = None
    pools: list[PoolStatus] | None = None
    snapshots: list[Snapshot] | None = None
    console: ConsoleEndpoint | None = None


PortMessage = (
    RoutedDeploy
    | RoutedOperate
    | RoutedRecover
    | RoutedAdminState
    | RoutedAddHost
    | RoutedSweep
    | RoutedAbort
    | RoutedMaintain
    | RoutedSetHA
    | RoutedSnapshots
    | RoutedVolumeCreate
    | RoutedVolumeOperate
    | RoutedVolumeRecover
    | RoutedPools
    | ServiceMessage
    | RoutedConsole
    | RoutedConsoleOpen
)


class DatacenterPort(Actor[PortMessage]):
    """Runs the operations routed to this node with its orchestrator. An operation for a
    datacenter this node does not run (it lost the lease since) is refused with
    DatacenterUnavailable, which the caller's client retries after a while."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def receive(self, message: PortMessage) -> Any:
        orchestrator = self.orchestrator
        if not orchestrator.runs(message.datacenter_id):
            if isinstance(message, RoutedDeploy):
                return None  # its owner's watchdog resumes it
            raise DatacenterUnavailable(
                f"datacenter {message.datacenter_id} no longer runs on this node; retry"
            )
        if isinstance(message, RoutedDeploy):
            orchestrator.datacenter(message.datacenter_id).tell(
                Deploy(task=message.task, vm=message.vm)
            )
            return None
        if isinstance(message, RoutedConsoleOpen):
            return await self._open_console(message)
        if isinstance(message, _VOLUME_MESSAGES):
            return await _run_volume(orchestrator, message)
        if isinstance(message, _SERVICE_MESSAGES):
            return RoutedReply(task=await run_service(orchestrator, message))
        return await _run(orchestrator, message)

    async def _open_console(self, message: RoutedConsoleOpen) -> ConsoleOpened:
        """The session's stream, a top-level actor of this node (a restart of this port does
        not end sessions): a serial port's is named after its VM, so that only one session at
        a time reads it (two would split its output)."""
        system = self.context.system
        serial = message.endpoint.kind is ConsoleKind.SERIAL
        name = f"serial-{message.vm_id}" if serial else f"console-{message.session}"
        with contextlib.suppress(NotFound):
            system.lookup(f"/user/{name}")
            return ConsoleOpened(
                refused=f"the serial console of VM {message.vm_id} is in use by another session",
                in_use=True,
            )
        try:
            stream = await connect(message.vm_id, message.endpoint)
        except BackendUnavailable as exc:
            return ConsoleOpened(refused=str(exc))
        ref = system.spawn(OwnerStream, message.session, message.peer, stream, name=name)
        return ConsoleOpened(stream=ref)


_SERVICE_MESSAGES = (RoutedConvert, RoutedCancelConversion, RoutedNetworkChange)
_VOLUME_MESSAGES = (RoutedVolumeCreate, RoutedVolumeOperate, RoutedVolumeRecover, RoutedPools)
_VolumeMessage = RoutedVolumeCreate | RoutedVolumeOperate | RoutedVolumeRecover | RoutedPools
_HostOrVMMessage = (
    RoutedOperate
    | RoutedRecover
    | RoutedAdminState
    | RoutedAddHost
    | RoutedSweep
    | RoutedAbort
    | RoutedMaintain
    | RoutedSetHA
    | RoutedSnapshots
    | RoutedConsole
)


async def _run(orchestrator: Orchestrator, message: _HostOrVMMessage) -> RoutedReply:
    """A VM's or a host's operation, with this node's orchestrator."""
    match message:
        case RoutedOperate(vm_id=vm_id, operation=operation, params=params):
            placed = orchestrator.placed(message.datacenter_id, message.host_id, vm_id)
            if placed is not None:
                task: Task = await placed.ask(RequestOperation(operation=operation, params=params))
                return RoutedReply(task=task)
            return RoutedReply(task=await orchestrator.operate(vm_id, operation, params))
        case RoutedRecover(vm_id=vm_id, verb=verb):
            return RoutedReply(task=await orchestrator.recover(vm_id, verb))
        case RoutedAdminState(host_id=host_id, operation=operation):
            return RoutedReply(host=await orchestrator.set_admin_state(host_id, operation))
        case RoutedAddHost(host_id=host_id):
            await orchestrator.add_host(await orchestrator.store.get(Host, host_id))
            return RoutedReply()
        case RoutedSweep(host_id=host_id):
            return RoutedReply(report=await orchestrator.sweep(message.datacenter_id, host_id))
        case RoutedAbort(task_id=task_id, reason=reason):
            return RoutedReply(task=await orchestrator.abort(task_id, reason))
        case RoutedMaintain(host_id=host_id):
            return RoutedReply(task=await orchestrator.maintain(host_id))
        case RoutedSetHA(vm_id=vm_id, ha=ha, priority=priority):
            return RoutedReply(vm=await orchestrator.set_ha(vm_id, ha, priority))
        case RoutedSnapshots(vm_id=vm_id):
            vm = await orchestrator.store.get(VM, vm_id)
            return RoutedReply(snapshots=await orchestrator.snapshots(vm))
        case RoutedConsole(vm_id=vm_id, kind=kind):
            vm = await orchestrator.store.get(VM, vm_id)
            return RoutedReply(console=await orchestrator.console(vm, kind))
        case _:
            assert_never(message)


async def _run_volume(orchestrator: Orchestrator, message: _VolumeMessage) -> RoutedReply:
    """A volume's operation, with this node's storage pools."""
    storage = orchestrator.storage
    if storage is None:
        raise NotFound(f"node runs no storage pools of datacenter {message.datacenter_id}")
    match message:
        case RoutedVolumeCreate():
            task = await storage.create_volume(
                tenant_id=message.tenant_id,
                datacenter_id=message.datacenter_id,
                name=message.name,
                size_gib=message.size_gib,
                tier=message.tier,
                claim=message.claim,
                source=await _volume_source(orchestrator.store, message),
            )
            return RoutedReply(task=task)
        case RoutedVolumeOperate(volume_id=volume_id, params=params):
            return RoutedReply(task=await storage.operate(volume_id, params))
        case RoutedVolumeRecover(volume_id=volume_id, verb=verb):
            result = await storage.recover(volume_id, verb)
            if isinstance(result, Task):
                return RoutedReply(task=result)
            return RoutedReply(volume=result)
        case RoutedPools(datacenter_id=datacenter_id):
            return RoutedReply(pools=await storage.pool_status(datacenter_id))
        case _:
            assert_never(message)


async def _volume_source(
    store: Store, message: RoutedVolumeCreate
) -> Volume | VolumeSnapshot | None:
    if message.snapshot_id is not None:
        return await store.get(VolumeSnapshot, message.snapshot_id)
    if message.source_volume_id is not None:
        return await store.get(Volume, message.source_volume_id)
    return None


class Routes:
    """Where a datacenter runs, for a node that does not run it: its lease's holder, if that
    lease runs and its node is up.

    ``ref(node, path)`` makes a ref to an actor of another node; ``status(node)`` is that
    node's status in the cluster view (None if unknown)."""

    def __init__(
        self,
        store: Store,
        ref: Callable[[str, str], ActorRef[Any]],
        status: Callable[[str], str | None],
    ) -> None:
        self.store = store
        self._ref = ref
        self._status = status
        #: The last lease read of each datacenter: its holder's node and its expiry. Until
        #: that expiry no other node can take the lease, so it needs no new read before then.
        self._known: dict[str, tuple[str, datetime]] = {}

    async def owner(self, datacenter_id: str) -> str | None:
        """The node that runs the datacenter now, or None."""
        now = datetime.now(UTC)
        known = self._known.get(datacenter_id)
        if known is not None and known[1] > now:
            return known[0]
        name = lease_name(datacenter_id)
        leases = [lease for lease in await self.store.list_leases(name) if lease.name == name]
        if not leases or leases[0].expires_at <= now:
            self._known.pop(datacenter_id, None)
            return None
        self._known[datacenter_id] = (leases[0].node, leases[0].expires_at)
        return leases[0].node

    async def port(self, datacenter_id: str) -> ActorRef[PortMessage]:
        """The port of the datacenter's owner; DatacenterUnavailable (503) if it has none up."""
        node = await self.owner(datacenter_id)
        if node is not None and self._status(node) != "up" and datacenter_id in self._known:
            del self._known[datacenter_id]  # read again: it may have handed the lease over
            node = await self.owner(datacenter_id)
        if node is None:
            raise DatacenterUnavailable(
                f"datacenter {datacenter_id} has no running owner node (none runs it, or its "
                "node died and its lease has not expired yet); retry"
            )
        status = self._status(node)
        if status != "up":
            raise DatacenterUnavailable(
                f"datacenter {datacenter_id} runs on node {node}, which is "
                f"{status or 'unknown'}; retry"
            )
        port: ActorRef[PortMessage] = self._ref(node, PORT)
        return port


class FinishedTasks:
    """Resolves this node's task waiters from the ``task.finished`` events of every node (a
    task driven on another node ends there)."""

    def __init__(self, events: EventBus, store: Store, waiters: TaskWaiters) -> None:
        self._events, self._store, self._waiters = events, store, waiters
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="finished-tasks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            try:
                async for event in self._events.subscribe(types=["task.finished"]):
                    task_id = str(event.data.get("task_id", ""))
                    if self._waiters.waiting(task_id):
                        with contextlib.suppress(NotFound):
                            self._waiters.resolve(await self._store.get(Task, task_id))
            except BusClosed:
                return
            except Exception as exc:  # a bus error: follow again from now
                _log.warning("finished_tasks.failed", error=describe(exc))
                await asyncio.sleep(1.0)
