"""What the store keeps: one frozen ``msgspec.Struct`` per kind of record.

Records whose kind has an ``id`` share :class:`Record` (``id``, ``version``, ``created_at``,
``updated_at``) and are handled by the store's generic calls (``create``, ``get``, ``list``,
``update``, ``delete``). ``version`` and the two times are set by the store: a new record is
stored with ``version = 1`` and every update adds one, which is what compare-and-set checks.

Field constraints (``Meta(ge=...)``) are checked before anything is written, so a bad value fails
with :class:`~cloudcore.errors.InvalidRecord` naming the field and nothing is stored.
"""

from __future__ import annotations

import os
import time
import uuid as _uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

import msgspec

__all__ = [
    "CURSOR_PATTERN",
    "EPOCH",
    "VM",
    "AddressRange",
    "AdminState",
    "ApiToken",
    "AuditEvent",
    "BalancePolicy",
    "BootVolume",
    "Datacenter",
    "Host",
    "HostHealth",
    "HostPower",
    "IdempotencyKey",
    "IpAllocation",
    "Lease",
    "Network",
    "NetworkKind",
    "NicRequest",
    "OutboxEvent",
    "Page",
    "PowerState",
    "Quota",
    "QuotaDrift",
    "Record",
    "Role",
    "StepState",
    "Task",
    "TaskState",
    "TaskStep",
    "Template",
    "TemplateState",
    "Tenant",
    "User",
    "VMSpec",
    "VMState",
    "Volume",
    "VolumeSnapshot",
    "VolumeSnapshotState",
    "VolumeState",
    "new_id",
]

#: Placeholder time of a record not stored yet; the store replaces it.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
#: Times carry a time zone, so both backends store the same instant.
Time = Annotated[datetime, msgspec.Meta(tz=True)]


def new_id(prefix: str = "", *, uuid: bool = False) -> str:
    """A new unique id: a 48-bit millisecond clock and random bits, the one id maker.

    Ids sort by creation time; within one process they are strictly increasing (in the same
    millisecond the random part counts up, as ULIDs do). Plain ids are 28 hex digits after
    ``prefix``; with ``uuid`` the id is a UUID string (80 random bits), for a VM whose id is
    also its guest's UUID on the hypervisor.
    """
    ms = time.time_ns() // 1_000_000
    last_ms, last_random = _last_id
    if ms <= last_ms:
        ms, random = last_ms, last_random + 1
    else:
        random = int.from_bytes(os.urandom(10)) >> 1  # leaves room to count up
    _last_id[:] = [ms, random]
    if uuid:
        return prefix + str(_uuid.UUID(hex=f"{ms:012x}{random:020x}"))
    return f"{prefix}{ms:012x}{random & (2**64 - 1):016x}"


_last_id = [0, 0]


class _Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Frozen, keyword-only, and strict about unknown fields."""


class Record(_Struct, frozen=True, kw_only=True):
    """Fields every record with an id has. The store sets ``version`` and the times."""

    id: Id
    version: int = 0
    created_at: Time = EPOCH
    updated_at: Time = EPOCH


class VMState(StrEnum):
    """Persisted lifecycle state of a VM (see ARCHITECTURE.md, VM lifecycle)."""

    DEFINED = "DEFINED"
    SCHEDULING = "SCHEDULING"
    PLACED = "PLACED"
    PROVISIONING = "PROVISIONING"
    STOPPED = "STOPPED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUSPENDED = "SUSPENDED"
    STARTING = "STARTING"
    STOPPING = "STOPPING"
    REBOOTING = "REBOOTING"
    PAUSING = "PAUSING"
    RESUMING = "RESUMING"
    SUSPENDING = "SUSPENDING"
    RECONFIGURING = "RECONFIGURING"
    SNAPSHOTTING = "SNAPSHOTTING"
    MIGRATING = "MIGRATING"
    DELETING = "DELETING"
    DELETED = "DELETED"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"


class PowerState(StrEnum):
    """Power state last observed on the hypervisor."""

    UNKNOWN = "UNKNOWN"
    ON = "ON"
    OFF = "OFF"
    PAUSED = "PAUSED"
    SUSPENDED = "SUSPENDED"


class HostHealth(StrEnum):
    """What the monitor last saw of a host."""

    UNKNOWN = "UNKNOWN"
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNREACHABLE = "UNREACHABLE"
    FENCED = "FENCED"  # down past HA's grace, then confirmed off (actors.ha); HEALTHY when back


class HostPower(StrEnum):
    """Whether a host is powered for work (``actors.host_power``). Only ON takes new VMs; a
    STANDBY host is empty and asleep, WAKING on its way back (the wake-up delay)."""

    ON = "ON"
    STANDBY = "STANDBY"
    WAKING = "WAKING"


class BalancePolicy(StrEnum):
    """A datacenter's balancing policy (``actors.balancer``): none, even out the hosts'
    allocation, or pack VMs onto fewer hosts (the emptied ones go to standby)."""

    OFF = "off"
    SPREAD = "spread"
    CONSOLIDATE = "consolidate"


class AdminState(StrEnum):
    """What the operator allows on a host (``actors.host_lifecycle`` has the transitions).
    Only ENABLED takes new VMs."""

    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    PREPARING_FOR_MAINTENANCE = "PREPARING_FOR_MAINTENANCE"  # its VMs are being moved away
    MAINTENANCE = "MAINTENANCE"  # empty: the operator may work on it
    ERROR_IN_MAINTENANCE = "ERROR_IN_MAINTENANCE"  # some VMs could not move (the task says why)


class VolumeState(StrEnum):
    CREATING = "CREATING"
    AVAILABLE = "AVAILABLE"
    ATTACHING = "ATTACHING"
    ATTACHED = "ATTACHED"  # ARCHITECTURE.md's IN_USE
    DETACHING = "DETACHING"
    EXTENDING = "EXTENDING"
    SNAPSHOTTING = "SNAPSHOTTING"
    DELETING = "DELETING"
    DELETED = "DELETED"
    ERROR = "ERROR"


class TaskState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    CANCELLED = "CANCELLED"


class StepState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"


class Role(StrEnum):
    """What a user may do. ``ADMIN``: everything, in every tenant. ``OPERATOR``: runs the
    infrastructure: sees and operates every tenant's VMs, hosts and tasks, but does not manage
    tenants, users or quotas. ``USER``: its own tenant's resources only."""

    ADMIN = "ADMIN"
    OPERATOR = "OPERATOR"
    USER = "USER"


class Tenant(Record, frozen=True, kw_only=True):
    """An enterprise: the unit of ownership, quota and isolation."""

    name: Name
    description: str = ""


class User(Record, frozen=True, kw_only=True):
    tenant_id: Id
    name: Name
    email: str = ""
    role: Role = Role.USER
    disabled: bool = False


class ApiToken(Record, frozen=True, kw_only=True):
    """An API token. Only a hash of the secret is stored (``token_hash``, unique)."""

    tenant_id: Id
    user_id: Id
    name: str = ""
    token_hash: Annotated[str, msgspec.Meta(min_length=32, max_length=128)]
    expires_at: Time | None = None


class Datacenter(Record, frozen=True, kw_only=True):
    name: Name
    location: str = ""
    balance_policy: BalancePolicy = BalancePolicy.OFF


class Host(Record, frozen=True, kw_only=True):
    """A hypervisor host. ``*_used`` change only through claim/release of capacity."""

    datacenter_id: Id
    name: Name
    hypervisor: Name
    address: str = ""
    cpus: Count
    memory_mib: Count
    cpus_used: Count = 0
    memory_mib_used: Count = 0
    health: HostHealth = HostHealth.UNKNOWN
    admin_state: AdminState = AdminState.ENABLED
    capabilities: dict[str, str] = msgspec.field(default_factory=dict)
    observed_at: Time | None = None
    power_state: HostPower = HostPower.ON


class NicRequest(_Struct, frozen=True, kw_only=True):
    """A NIC a VM is created with: on ``network_id``, with ``address`` if given (else a free
    one). The address and MAC it gets are held in ``ip_allocations`` under the VM's id."""

    network_id: Id
    address: str | None = None


class BootVolume(_Struct, frozen=True, kw_only=True):
    """The volume a VM boots from (instead of a template's disk): attached to the VM by its
    deploy, with ``delete_on_termination`` (deleting the VM deletes the volume too; else it is
    detached and kept)."""

    volume_id: Id
    delete_on_termination: bool = False


class VMSpec(_Struct, frozen=True, kw_only=True):
    """What the tenant asked for. ``nics``: the NICs it was created with (what they hold is
    in the store's ``ip_allocations``; NICs added later are there only)."""

    cpus: Positive
    memory_mib: Positive
    disk_gib: Count = 0
    template_id: str | None = None
    affinity_group: str | None = None
    network_ids: tuple[str, ...] = ()
    nics: tuple[NicRequest, ...] = ()
    extra: dict[str, str] = msgspec.field(default_factory=dict)
    #: The most a running VM may grow to (None: its size when defined). Records written before
    #: these fields existed read with None, so the JSON spec column needs no migration.
    max_cpus: Positive | None = None
    max_memory_mib: Positive | None = None
    #: Restarted on another host when its host fails (actors.ha), higher ``ha_priority`` first.
    ha: bool = False
    ha_priority: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    boot_volume: BootVolume | None = None

    def live_limits(self) -> tuple[int, int]:
        """(vCPUs, MiB) a running VM can reach without a restart. A stopped reconfigure grows
        the hypervisor's maxima with the size, so the current size is a floor."""
        return max(self.max_cpus or 0, self.cpus), max(self.max_memory_mib or 0, self.memory_mib)


class VM(Record, frozen=True, kw_only=True):
    """A virtual machine: desired state, lifecycle state, observed power, task in flight."""

    tenant_id: Id
    datacenter_id: Id
    host_id: str | None = None
    name: Name
    spec: VMSpec
    desired_state: VMState = VMState.STOPPED
    state: VMState = VMState.DEFINED
    power: PowerState = PowerState.UNKNOWN
    task_id: str | None = None
    observed_at: Time | None = None
    fault: str | None = None


class Volume(Record, frozen=True, kw_only=True):
    """A block volume on a storage pool. ``pool_id`` is the pool (storage server) it was placed
    on, ``tier`` the kind of pool asked for; ``vm_id`` the VM it is attached to and ``device``
    the name the hypervisor gave it there; ``target`` its iSCSI target while exported. While an
    extend runs, ``size_gib`` is already the size asked for (and its quota taken)."""

    tenant_id: Id
    datacenter_id: Id
    name: Name
    size_gib: Positive
    state: VolumeState = VolumeState.CREATING
    vm_id: str | None = None
    target: str | None = None
    task_id: str | None = None
    fault: str | None = None
    pool_id: str | None = None
    tier: Name = "standard"
    device: str | None = None


class VolumeSnapshotState(StrEnum):
    CREATING = "CREATING"
    AVAILABLE = "AVAILABLE"
    DELETING = "DELETING"
    ERROR = "ERROR"


class VolumeSnapshot(Record, frozen=True, kw_only=True):
    """A point-in-time copy of a volume, on the volume's pool; ``size_gib`` is the volume's size
    when it was taken."""

    tenant_id: Id
    volume_id: Id
    name: Name
    size_gib: Positive
    state: VolumeSnapshotState = VolumeSnapshotState.CREATING
    fault: str | None = None


class NetworkKind(StrEnum):
    """How a network reaches the hosts: a plain bridge, or a VLAN (``vlan`` the tag) on one."""

    BRIDGE = "bridge"
    VLAN = "vlan"


class AddressRange(_Struct, frozen=True, kw_only=True):
    """Addresses ``first`` to ``last`` (both included) that the store may hand out."""

    first: Name
    last: Name


class Network(Record, frozen=True, kw_only=True):
    """A network of a datacenter. ``tenant_id`` None: a public network, shared, whose addresses
    tenants take and give back; otherwise the tenant's private network.

    ``cidr`` is IPv4 or IPv6. Addresses are handed out from ``ranges`` (none: every host
    address of the CIDR), never the ``gateway`` nor an ``excluded`` one. A released address
    rests ``quarantine_s`` seconds before it is handed out again. ``bridge`` names the host
    bridge its NICs are plugged into and its DHCP server listens on; ``extra`` carries what a
    driver needs (a port group, a switch name). :func:`cloudcore.ipam.check_network` is the
    validation the API and :meth:`Store.create_network` apply.
    """

    tenant_id: str | None = None
    datacenter_id: Id
    name: Name
    cidr: Name
    gateway: str | None = None
    vlan: Annotated[int, msgspec.Meta(ge=0, le=4094)] | None = None
    kind: NetworkKind = NetworkKind.BRIDGE
    dns: tuple[str, ...] = ()
    ranges: tuple[AddressRange, ...] = ()
    excluded: tuple[str, ...] = ()
    bridge: str = ""
    quarantine_s: Count = 300
    extra: dict[str, str] = msgspec.field(default_factory=dict)


class TemplateState(StrEnum):
    """Where a template's image stands (the machine is in actors/template_lifecycle.py)."""

    NEW = "NEW"  # a record without an image yet
    UPLOADING = "UPLOADING"  # bytes arriving; the partial file is outside the library
    CONVERTING = "CONVERTING"  # its image is being converted to another format
    AVAILABLE = "AVAILABLE"  # an inspected image in the library
    ERROR = "ERROR"  # the last upload was refused; ``error`` says why
    DELETING = "DELETING"


class Template(Record, frozen=True, kw_only=True):
    """A disk image in the library. ``tenant_id`` None: public.

    ``disk_format`` is the format the uploaded image really has (qemu-img's, whatever its name
    said); ``formats`` maps each format the image is available in to the sha256 of that file in
    the datacenter's repository. While UPLOADING, ``upload_size``/``upload_sha256`` are what the
    uploader declared and ``uploaded_bytes`` how much of it has arrived. ``upload_size`` is what
    the template counts against its tenant's ``template_gib`` quota (rounded up to GiB), from
    the upload or import that declared it to the template's delete."""

    tenant_id: str | None = None
    datacenter_id: str | None = None
    name: Name
    os_type: str = ""
    disk_format: str = "qcow2"
    source: str = ""
    size_gib: Count = 0
    state: TemplateState = TemplateState.AVAILABLE
    virtual_size: Count = 0
    actual_size: Count = 0
    checksum: str = ""
    formats: dict[str, str] = msgspec.field(default_factory=dict)
    upload_size: Count = 0
    upload_sha256: str = ""
    uploaded_bytes: Count = 0
    error: str | None = None
    #: The least a VM deployed from this template must have (0: no minimum).
    min_cpus: Count = 0
    min_memory_mib: Count = 0


class Task(Record, frozen=True, kw_only=True):
    """A long operation. Its steps are journaled in :class:`TaskStep` before each runs."""

    tenant_id: str | None = None
    kind: Name
    subject: Name
    state: TaskState = TaskState.PENDING
    deadline: Time | None = None
    step_count: Count = 0
    error: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class TaskStep(_Struct, frozen=True, kw_only=True):
    """One journaled step of a task, numbered from 1 in the order it was appended."""

    task_id: str
    seq: int
    name: str
    state: StepState = StepState.PENDING
    deadline: Time | None = None
    error: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: Time = EPOCH
    updated_at: Time = EPOCH


class AuditEvent(_Struct, frozen=True, kw_only=True):
    """One line of the audit trail. ``id`` grows with every event recorded."""

    id: int
    time: Time
    type: str
    subject: str
    tenant_id: str | None = None
    actor: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class OutboxEvent(_Struct, frozen=True, kw_only=True):
    """An event written in the same transaction as the change that causes it (the outbox), kept
    until the relay has published it to the event bus.

    Callers give ``type``, ``subject``, ``tenant_id`` and ``data``; the store sets ``id`` (made
    by :func:`new_id` when it is written, the event's id on the bus, by which consumers
    de-duplicate), ``time`` and ``seq`` (the order of writing).
    """

    type: Name
    subject: Name
    tenant_id: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    id: str = ""
    time: Time = EPOCH
    seq: int = 0


class Quota(_Struct, frozen=True, kw_only=True):
    """How much of ``resource`` (``vms``, ``cpus``, ``memory_mib``, ...) a tenant may use."""

    tenant_id: str
    resource: str
    maximum: Count
    used: Count = 0
    version: int = 0


class QuotaDrift(_Struct, frozen=True, kw_only=True):
    """A tenant's recorded usage of a resource that differs from what exists."""

    tenant_id: str
    resource: str
    recorded: int
    actual: int


class IdempotencyKey(_Struct, frozen=True, kw_only=True):
    """A request sent with an ``Idempotency-Key``: who sent it (``principal``), a digest of
    what it asked (``fingerprint``), the attempt that holds it (``owner``), the task a create
    made under it (written in the create's transaction) and, once given, the answer."""

    principal: str
    key: str
    fingerprint: str
    owner: str
    task_id: str | None = None
    status: int | None = None
    location: str | None = None
    body: str | None = None
    claimed_at: Time = EPOCH
    expires_at: Time = EPOCH


class Lease(_Struct, frozen=True, kw_only=True):
    """The right of one process (``holder``, of node ``node``) to run what ``name`` names (a
    datacenter: ``datacenter/<id>``) until ``expires_at``. ``token`` grows by one at every
    change of holder: the fencing token."""

    name: str
    node: str
    holder: str
    token: int
    acquired_at: Time = EPOCH
    expires_at: Time = EPOCH


class IpAllocation(_Struct, frozen=True, kw_only=True):
    """An address of a network held by a VM's NIC (``mac`` its MAC), or taken by a tenant
    (``vm_id`` None: a public address not attached). ``released_at`` set: given back at that
    time and resting in quarantine; ``vm_id``, ``tenant_id`` then say who held it last."""

    network_id: str
    address: str
    vm_id: str | None = None
    tenant_id: str | None = None
    mac: str | None = None
    created_at: Time = EPOCH
    released_at: Time | None = None


R = TypeVar("R")


#: Every cursor a listing reads back: unpadded base64url. Any string of the alphabet is a
#: position in id order, so a made-up cursor starts somewhere rather than failing.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"


class Page(_Struct, Generic[R], frozen=True, kw_only=True):
    """One page of a listing. ``next_cursor`` None: this is the last page. ``total``: how many
    records the listing's filters match, on every page (None when not counted)."""

    items: list[R]
    next_cursor: str | None = None
    total: int | None = None
