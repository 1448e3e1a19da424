"""Values that cross the hypervisor driver boundary.

Every value is a frozen ``msgspec.Struct``: drivers build them from SDK objects and never hand SDK
objects out. Sizes carry their unit in the field name (``memory_mib`` for a VM, ``memory_kib`` for a
host, as hypervisors report them). Backend-specific settings travel in ``extra`` mappings.
"""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from cloudcore.errors import InvalidRequest

__all__ = [
    "Capability",
    "ConsoleEndpoint",
    "ConsoleKind",
    "DiskSpec",
    "DomainSpec",
    "DriverSettings",
    "EventKind",
    "FileDisk",
    "GuestPower",
    "HostCapacity",
    "HostInventory",
    "IscsiDisk",
    "LifecycleEvent",
    "MigrationProgress",
    "NicInfo",
    "NicSpec",
    "SnapshotInfo",
    "StopOutcome",
    "VMInfo",
]


class Capability(enum.StrEnum):
    """An optional feature of a driver (for its connected backend).

    The lifecycle core is mandatory and not listed: connect, close, host inventory and capacity,
    list VMs, power state, define, start, hard stop, destroy. A call that needs a capability the
    driver does not declare raises ``UnsupportedOperation`` before touching the backend.
    """

    LIFECYCLE_EVENTS = "lifecycle_events"  # pushed by the hypervisor; else the driver polls
    GRACEFUL_STOP = "graceful_stop"  # ask the guest to shut down (ACPI) before a hard stop
    REBOOT = "reboot"
    PAUSE = "pause"  # vCPUs stopped, memory kept in the host
    SUSPEND = "suspend"  # memory saved to disk, process gone, resumed where it left off
    RECONFIGURE = "reconfigure"  # CPU and memory of a stopped VM
    LIVE_RECONFIGURE = "live_reconfigure"  # CPU and memory of a running VM, within its maxima
    SNAPSHOT = "snapshot"
    ATTACH_VOLUME = "attach_volume"  # hot attach and detach of disks
    ISCSI_DISKS = "iscsi_disks"  # network iSCSI disks opened by the hypervisor's own initiator
    RESIZE_VOLUME = "resize_volume"  # tell a running VM that an attached disk has grown
    MIGRATE = "migrate"  # live migration to another host of the same hypervisor type
    HOTPLUG_NIC = "hotplug_nic"  # add and remove NICs of a running VM
    CONSOLE = "console"  # a running VM's graphical (VNC) and serial consoles
    IMPORT_IMAGE = "import_image"  # a template's image copied to the host's own storage
    HOST_POWER = "host_power"  # put the whole host to standby and wake it (power saving)


class GuestPower(enum.StrEnum):
    """The power state of a VM as last observed on the hypervisor."""

    RUNNING = "running"  # includes blocked and shutting down: the guest still runs
    PAUSED = "paused"
    SUSPENDED = "suspended"  # saved to disk (or guest power-management sleep)
    STOPPED = "stopped"
    CRASHED = "crashed"
    UNKNOWN = "unknown"


class EventKind(enum.StrEnum):
    """What happened to a VM, as the hypervisor reported it."""

    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    SHUTTING_DOWN = "shutting_down"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    CRASHED = "crashed"


class StopOutcome(enum.StrEnum):
    """How ``stop_vm`` ended."""

    ALREADY_STOPPED = "already_stopped"
    GRACEFUL = "graceful"  # the guest shut down before the deadline
    FORCED = "forced"  # the deadline passed (or was zero) and the VM was powered off


class _Value(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class DriverSettings(_Value, frozen=True, kw_only=True):
    """How to reach one hypervisor host.

    ``uri`` is the driver's own address form (``qemu:///system``, ``test:///default``,
    ``https://vcenter/sdk``). ``password`` is never shown by ``repr``.
    """

    uri: str
    username: str | None = None
    password: str | None = None
    extra: dict[str, str] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        secret = "None" if self.password is None else "'***'"
        return (
            f"DriverSettings(uri={self.uri!r}, username={self.username!r}, "
            f"password={secret}, extra={self.extra!r})"
        )


class HostInventory(_Value, frozen=True, kw_only=True):
    """What a host is: its size and its hypervisor. Changes only when the host changes."""

    hostname: str
    hypervisor_type: str  # as the backend names it: "QEMU", "TEST", "VMware ESXi", ...
    hypervisor_version: str
    cpu_model: str
    cpus: int
    memory_kib: int
    extra: dict[str, str] = msgspec.field(default_factory=dict)


class HostCapacity(_Value, frozen=True, kw_only=True):
    """What a host has in use now. Allocations count VMs that are running or paused."""

    cpus: int
    memory_kib: int
    allocated_vcpus: int
    allocated_memory_kib: int
    running_vms: int
    free_memory_kib: int | None = None  # as the hypervisor reports it, when it does


class FileDisk(_Value, frozen=True, kw_only=True, tag="file"):
    """A disk image on a path the hypervisor host can open."""

    path: str
    format: str = "qcow2"
    serial: str | None = None  # the volume id; how the guest and ``detach_volume`` find it
    readonly: bool = False
    #: Where the firmware tries this disk among the VM's boot devices (1 first); None: not
    #: listed. A VM with any disk so ordered boots by device order only, also when the disk
    #: is attached to it stopped (the driver takes the VM's default boot device away).
    boot_order: int | None = None


class IscsiDisk(_Value, frozen=True, kw_only=True, tag="iscsi"):
    """A LUN opened by the hypervisor's own iSCSI initiator (no host kernel initiator needed).

    ``chap_password`` is never shown by ``repr``.
    """

    host: str
    iqn: str
    lun: int = 0
    port: int = 3260
    chap_username: str | None = None
    chap_password: str | None = None
    serial: str | None = None
    #: The initiator name the hypervisor's initiator gives the target (a target that lets in
    #: only one initiator refuses any other); None: the hypervisor's default.
    initiator: str | None = None
    #: As FileDisk's: 1 for the boot volume of a VM deployed from one.
    boot_order: int | None = None

    def __repr__(self) -> str:
        secret = "None" if self.chap_password is None else "'***'"
        return (
            f"IscsiDisk(host={self.host!r}, port={self.port}, iqn={self.iqn!r}, lun={self.lun}, "
            f"chap_username={self.chap_username!r}, chap_password={secret}, "
            f"serial={self.serial!r}, initiator={self.initiator!r}, "
            f"boot_order={self.boot_order!r})"
        )


DiskSpec = FileDisk | IscsiDisk


class NicSpec(_Value, frozen=True, kw_only=True):
    """A network interface. ``kind`` is ``network`` (a named virtual network), ``bridge`` (a host
    bridge) or ``user`` (the hypervisor's own NAT, no host set-up); ``source`` names it.

    ``vlan``: the tag of a VLAN network. ``extra``: the cloud network's own settings, where a
    driver finds the name its backend knows the network by (:meth:`name_on`):
    ``vsphere.portgroup``, ``xenserver.network``, ``hyperv.switch``; on libvirt,
    ``libvirt.parent`` names the host's trunk device of a VLAN network, whose NICs then sit on
    its subinterface ``<parent>.<vlan>`` (macvtap) instead of on ``source``."""

    kind: str = "network"
    source: str = "default"
    mac: str | None = None
    model: str = "virtio"
    vlan: int | None = None
    extra: dict[str, str] = msgspec.field(default_factory=dict)

    def name_on(self, key: str) -> str:
        """The backend's name for the network: ``extra[key]``, else ``source``."""
        return self.extra.get(key) or self.source


class NicInfo(_Value, frozen=True, kw_only=True):
    """A NIC as the hypervisor has it: its MAC (lower case) and the network, bridge, port
    group or switch it is on, as the backend names it."""

    mac: str
    source: str


class DomainSpec(_Value, frozen=True, kw_only=True):
    """What a VM is made of. The orchestrator owns the identity: ``uuid`` is always given."""

    uuid: str
    name: str
    vcpus: int
    memory_mib: int
    disks: list[DiskSpec] = msgspec.field(default_factory=list)
    nics: list[NicSpec] = msgspec.field(default_factory=list)
    max_vcpus: int | None = None  # ceiling for live reconfiguration; default: vcpus
    max_memory_mib: int | None = None  # ceiling for live reconfiguration; default: memory_mib
    extra: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vcpus < 1 or self.memory_mib < 1:
            raise InvalidRequest("a VM needs at least 1 vCPU and 1 MiB of memory")
        if self.max_vcpus is not None and self.max_vcpus < self.vcpus:
            raise InvalidRequest("max_vcpus is below vcpus")
        if self.max_memory_mib is not None and self.max_memory_mib < self.memory_mib:
            raise InvalidRequest("max_memory_mib is below memory_mib")


class VMInfo(_Value, frozen=True, kw_only=True):
    """A VM as the hypervisor sees it now."""

    uuid: str
    name: str
    power: GuestPower
    vcpus: int
    memory_mib: int


class SnapshotInfo(_Value, frozen=True, kw_only=True):
    """A snapshot of a VM."""

    name: str
    created_at: datetime
    power: GuestPower  # the VM's power state when the snapshot was taken


class LifecycleEvent(_Value, frozen=True, kw_only=True):
    """Something happened to a VM. ``power`` is the state the event implies, or None when it
    implies none (a definition changed, a VM was undefined). ``detail`` is the backend's own
    reason (``destroyed``, ``shutdown``, ``saved``...) for logs and diagnosis."""

    vm_uuid: str
    vm_name: str
    kind: EventKind
    power: GuestPower | None
    detail: str
    at: datetime


class MigrationProgress(_Value, frozen=True, kw_only=True):
    """How far a migration has come, from the hypervisor's job info (bytes of memory, and of
    disk when storage is copied). ``simulated``: no hypervisor moved anything (a test host)."""

    data_total: int = 0
    data_processed: int = 0
    data_remaining: int = 0
    elapsed_ms: int = 0
    memory_bps: int | None = None
    simulated: bool = False

    @property
    def percent(self) -> float:
        """0 to 100; 0 while the hypervisor does not know the total yet (100 when simulated)."""
        if self.simulated:
            return 100.0
        if self.data_total <= 0:
            return 0.0
        return round(min(100.0, 100.0 * self.data_processed / self.data_total), 1)


class ConsoleKind(enum.StrEnum):
    VNC = "vnc"  # the graphical console: an RFB server at host:port
    SERIAL = "serial"  # the first serial port: a pseudo-terminal at path


class ConsoleEndpoint(_Value, frozen=True, kw_only=True):
    """Where a running VM's console is, as the node that runs the host's driver reaches it: an
    RFB (VNC) server at ``host``:``port``, or the serial port's pseudo-terminal at ``path`` on
    the host. No password: only that node reaches either (loopback, a management network, or
    the host's own file system)."""

    kind: ConsoleKind = ConsoleKind.VNC
    host: str = ""
    port: int = 0
    path: str = ""
