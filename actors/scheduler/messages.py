"""What the scheduler actor accepts, and what each message replies to an ``ask``."""

from __future__ import annotations

import msgspec

from actors.scheduler.affinity import group_key
from cloudcore.runtime import Message
from cloudcore.store.records import VM, Host, VMSpec, VMState

__all__ = [
    "ClaimChanged",
    "Explain",
    "HostRemoved",
    "HostUpdated",
    "PlaceVM",
    "ReleaseVM",
    "ReservationEnded",
    "ReserveHost",
    "Resync",
    "SchedulerMessage",
    "SelectHosts",
    "VMClaim",
]


class PlaceVM(Message, frozen=True, kw_only=True):
    """Pick a host for the VM and place it there in the store (state PLACED).

    Replies with the VM record as stored, ``host_id`` set. ``vm``, when given, saves the scheduler
    reading the VM; ``expected_version`` is compared with the stored VM either way.

    Raises NoValidHost (no host passes the filters; its ``explanation`` says how many each
    rejected), VersionConflict (the VM changed since ``expected_version``), Conflict (the VM is
    already on a host), NotFound (no such VM), InvalidRecord (unknown affinity policy). Not
    idempotent: a second PlaceVM of a placed VM raises Conflict or VersionConflict.
    """

    vm_id: str
    expected_version: int
    vm: VM | None = None


class ReserveHost(Message, frozen=True, kw_only=True):
    """Pick a host for ``vm`` (on no host yet) and hold its claim in the view, not in the store,
    so that the placements decided after it count it. Replies with the host's id.

    PlaceVM in two halves, for a caller that writes the claim itself (``Store.place_vm``) and then
    tells ReservationEnded, placed or not: the scheduler decides one placement after another,
    but the store writes of many placements overlap instead of waiting in its mailbox. Raises
    NoValidHost, Conflict (the VM is on a host already), InvalidRecord (unknown affinity policy).
    """

    vm: VM


class ReservationEnded(Message, frozen=True, kw_only=True):
    """The store write after a ReserveHost is over. ``placed``: the store claimed the host for
    the VM (the view holds it already); otherwise the reservation is given back and the host
    read again from the store (it refused: the view was stale; or the write failed). Replies
    None."""

    vm_id: str
    host_id: str
    placed: bool


class ReleaseVM(Message, frozen=True, kw_only=True):
    """The VM left its host (unplaced, deleted or migrated away): update the scheduler's view.

    Tell it after the store has released the claim (``Store.unplace_vm``). The scheduler's own
    record of the VM wins over the fields; they matter for a VM another scheduler placed.
    ``group`` is the group key (``ReleaseVM.of(vm)`` fills it). Replies None; idempotent.
    """

    vm_id: str
    host_id: str
    cpus: int
    memory_mib: int
    group: str | None = None

    @classmethod
    def of(cls, vm: VM, host_id: str) -> ReleaseVM:
        """The release of ``vm`` (as it was before it was unplaced) from ``host_id``."""
        return cls(
            vm_id=vm.id,
            host_id=host_id,
            cpus=vm.spec.cpus,
            memory_mib=vm.spec.memory_mib,
            group=group_key(vm.tenant_id, vm.spec),
        )


class VMClaim(msgspec.Struct, frozen=True, kw_only=True):
    """What a VM holds on a host: its spec's CPUs and memory."""

    host_id: str
    cpus: int
    memory_mib: int

    @classmethod
    def of(cls, vm: VM) -> VMClaim | None:
        """The claim ``vm`` holds as stored: None if it is on no host (or deleted)."""
        if vm.host_id is None or vm.state is VMState.DELETED:
            return None
        return cls(host_id=vm.host_id, cpus=vm.spec.cpus, memory_mib=vm.spec.memory_mib)


class ClaimChanged(Message, frozen=True, kw_only=True):
    """A VM's claim changed in the store (resized, moved, released): update the view.

    Tell it after the store's transaction (:mod:`actors.claims` does). ``before`` is what the VM
    held, ``after`` what it holds now (None: nothing). The scheduler's own record of the VM wins
    over ``before``, which matters for a VM another scheduler placed. Replies None; telling the
    same change twice changes nothing the second time for a VM the scheduler knows.
    """

    vm_id: str
    group: str | None = None
    before: VMClaim | None = None
    after: VMClaim | None = None


class Resync(Message, frozen=True, kw_only=True):
    """Reload the view (hosts, their claims, the VMs placed) from the store. Replies with the
    number of hosts loaded."""


class HostUpdated(Message, frozen=True, kw_only=True):
    """A host was registered or changed (capacity, claims, health, admin state). Replies None.

    An update older (lower ``version``) than the one the scheduler holds is ignored.
    """

    host: Host


class HostRemoved(Message, frozen=True, kw_only=True):
    """A host was deleted: never offer it again. Replies None; idempotent."""

    host_id: str


class Explain(Message, frozen=True, kw_only=True):
    """Replies with an Explanation: how many hosts each filter would reject for a VM of ``spec``
    owned by ``tenant_id``, and how many pass, right now. Places nothing."""

    spec: VMSpec
    tenant_id: str


class SelectHosts(Message, frozen=True, kw_only=True):
    """Replies with the ids of the hosts, best first, that pass every filter for ``vm`` other
    than the one it is on (the targets of its migration). Claims nothing. Raises NoValidHost,
    or HostWaking when only a standby host fits (woken for it: ask again after its delay)."""

    vm: VM


SchedulerMessage = (
    PlaceVM
    | ReserveHost
    | ReservationEnded
    | ReleaseVM
    | ClaimChanged
    | Resync
    | HostUpdated
    | HostRemoved
    | Explain
    | SelectHosts
)
