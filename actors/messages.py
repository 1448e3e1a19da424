"""Messages between the domain actors. Commands are imperative, events past tense."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec

from actors.lifecycle import Operation
from actors.operations import OperationParams
from cloudcore.runtime import ActorRef, Message
from cloudcore.store.records import VM, PowerState, Task, VMSpec, VMState
from hypervisor_drivers.types import ConsoleKind, DiskSpec, GuestPower

__all__ = [
    "AbortTask",
    "AdoptVM",
    "AttachDisk",
    "Deploy",
    "DetachDisk",
    "Forget",
    "GetCapabilities",
    "GetHost",
    "GetVM",
    "ListSnapshots",
    "Observation",
    "OperationFinished",
    "PowerObserved",
    "PowerOf",
    "Provision",
    "Recover",
    "RecoverVerb",
    "RequestOperation",
    "SetHA",
    "SetHostPower",
    "Snapshot",
    "Sweep",
    "SweepReport",
    "VMChange",
]


class RequestOperation(Message, frozen=True, kw_only=True):
    """Run ``operation`` on the VM. Replies at once with the operation's Task (journal);
    IllegalTransition if the VM's state does not allow it; InvalidRequest if ``params`` are not
    ``operation``'s (None: its defaults; a reconfigure has none). ``reply_to`` hears
    OperationFinished."""

    operation: Operation
    params: OperationParams | None = None
    reply_to: ActorRef[OperationFinished] | None = None


class Provision(Message, frozen=True, kw_only=True):
    """Second half of a deploy, on the VM's host: define, then start if ``start``."""

    task: Task
    start: bool
    reply_to: ActorRef[OperationFinished] | None = None
    steps_done: int | None = None  # of ``task``, if the sender knows: spares a read


class OperationFinished(Message, frozen=True, kw_only=True):
    task_id: str
    vm: VM
    error: str | None = None


class GetVM(Message, frozen=True, kw_only=True):
    pass


class RecoverVerb(enum.StrEnum):
    """What an operator does with a VM in ERROR."""

    RETRY = "retry"  # run the failed task again
    SUCCEED = "succeed"  # the task did what it should: the VM takes its target state
    FAIL = "fail"  # the task failed for good: the VM takes what its hypervisor shows
    DELETE = "delete"  # delete the VM


class Recover(Message, frozen=True, kw_only=True):
    """VM: an operator's verdict on a VM in ERROR and its last task. Replies with the VM."""

    verb: RecoverVerb
    task: Task | None


class Observation(enum.StrEnum):
    """Where a PowerObserved comes from. Only sweeps count a VM's absences: events are hints."""

    EVENT = "event"  # the hypervisor's event stream
    SWEEP = "sweep"  # a host's periodic comparison of the hypervisor with the store


class PowerObserved(Message, frozen=True, kw_only=True):
    """What the hypervisor showed of a VM, from an event or a sweep; ``power`` None: not there."""

    vm_id: str
    power: GuestPower | None
    source: Observation


class VMChange(msgspec.Struct, frozen=True, kw_only=True):
    """A change to a VM's record: the fields given (UNSET: unchanged; None clears the optional
    ``task_id`` and ``fault``)."""

    state: VMState | msgspec.UnsetType = msgspec.UNSET
    power: PowerState | msgspec.UnsetType = msgspec.UNSET
    task_id: str | msgspec.UnsetType | None = msgspec.UNSET
    fault: str | msgspec.UnsetType | None = msgspec.UNSET
    spec: VMSpec | msgspec.UnsetType = msgspec.UNSET

    def fields(self) -> dict[str, Any]:
        """The fields given, by name, as the store's ``update`` takes them."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not msgspec.UNSET
        }


class AdoptVM(Message, frozen=True, kw_only=True):
    """Host: run an actor for this VM (placed on this host). Replies with its ref."""

    vm: VM


class Forget(Message, frozen=True, kw_only=True):
    """Host: the VM left this host (deleted or migrated away)."""

    vm_id: str


class GetHost(Message, frozen=True, kw_only=True):
    pass


class AttachDisk(Message, frozen=True, kw_only=True):
    """Host: attach ``disk`` to VM ``vm_id`` (hot when it runs, in its definition always);
    replies with the device name. Told only within the node that runs the host (the disk may
    carry a CHAP secret)."""

    vm_id: str
    disk: DiskSpec


class ResizeDisk(Message, frozen=True, kw_only=True):
    """Host: tell running VM ``vm_id`` that its disk ``serial`` is now ``size_bytes``.
    Replies None; UnsupportedOperation when the hypervisor cannot."""

    vm_id: str
    serial: str
    size_bytes: int


class DetachDisk(Message, frozen=True, kw_only=True):
    """Host: detach the disk whose serial is ``serial`` from VM ``vm_id``; a VM or disk that is
    not there is not an error. Replies None."""

    vm_id: str
    serial: str


class PowerOf(Message, frozen=True, kw_only=True):
    """Host: the power of VM ``vm_id`` on its hypervisor now (None: not there), whatever the
    store says. BackendUnavailable while the host is not connected."""

    vm_id: str


class SetHA(Message, frozen=True, kw_only=True):
    """VM: set ``spec.ha`` and ``spec.ha_priority``. Replies with the VM. Conflict while an
    operation runs on it."""

    ha: bool
    priority: int


class AbortTask(Message, frozen=True, kw_only=True):
    """VM: stop the task ``task_id`` it runs now (a migration: the hypervisor aborts it, the
    VM stays where it was). Replies None at once; the task ends FAILED with ``reason``.
    Conflict when the VM runs no such task, or one that cannot be aborted."""

    task_id: str
    reason: str


class GetCapabilities(Message, frozen=True, kw_only=True):
    """Host: the capabilities of its driver (``Capability`` values), sorted.
    BackendUnavailable while the host is not connected."""


class SetHostPower(Message, frozen=True, kw_only=True):
    """Host: put the whole host to standby (``standby``) or wake it through its driver (the
    ``HOST_POWER`` capability; :mod:`actors.host_power` decides when). Replies with how it was
    done, in words. UnsupportedOperation when the driver cannot; BackendUnavailable while the
    host is not connected."""

    standby: bool


class ListSnapshots(Message, frozen=True, kw_only=True):
    """Host: the snapshots of one of its VMs, oldest first, as a list of :class:`Snapshot`.
    UnsupportedOperation when its driver cannot snapshot; BackendUnavailable while the host is
    not connected."""

    vm_id: str


class GetConsole(Message, frozen=True, kw_only=True):
    """Host: where the ``kind`` console of its VM ``vm_id`` is now (a ``ConsoleEndpoint``).
    BackendUnavailable while the host is not connected; the driver's UnsupportedOperation or
    IllegalTransition when the VM has no such console now."""

    vm_id: str
    kind: ConsoleKind = ConsoleKind.VNC


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A VM's snapshot as the API shows it: its name, when it was taken, and the VM's power
    state then (to which a revert returns it)."""

    name: str
    created_at: datetime
    power: str


class Sweep(Message, frozen=True, kw_only=True):
    """Host: compare the hypervisor with the store now (also sent by a periodic timer)."""


class SweepReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a sweep found: VMs on the hypervisor the store does not know, and VMs the store
    places here that the hypervisor lacks (after two sweeps)."""

    host_id: str
    orphans_on_hypervisor: list[str]
    missing_on_hypervisor: list[str]


class Deploy(Message, frozen=True, kw_only=True):
    """Datacenter: run the deploy task of a VM (claimed here if PENDING). ``vm``: the record as
    just written, when the sender has it (saves the runner a read)."""

    task: Task
    vm: VM | None = None
