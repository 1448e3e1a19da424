"""XAPI records read into cloudcore values, and the session the client and the event watcher open.

XAPI sends int64 fields as decimal strings and dates as XML-RPC ``DateTime``; a field of the
wrong shape is a malformed reply, reported as a ``DriverError`` naming the field.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import xmlrpc.client
from datetime import UTC, datetime
from typing import Any

import XenAPI

from cloudcore.errors import ConfigError, DriverError
from hypervisor_drivers.types import DomainSpec, DriverSettings, GuestPower, SnapshotInfo, VMInfo

__all__ = [
    "NULL",
    "UUID_KEY",
    "belongs_to",
    "integer",
    "open_session",
    "power",
    "refused_power",
    "snapshot_info",
    "username",
    "vm_info",
    "vm_record",
    "vm_uuid",
]

NULL = "OpaqueRef:NULL"
UUID_KEY = "cloudcore_uuid"  # other_config key: XAPI chooses a VM's own uuid, we cannot
SNAPSHOT_SEQ_KEY = "cloudcore_snapshot_seq"  # orders snapshots taken within the same second
API_VERSION = "2.21"
_POWER = {
    "Running": GuestPower.RUNNING,
    "Paused": GuestPower.PAUSED,
    "Suspended": GuestPower.SUSPENDED,
    "Halted": GuestPower.STOPPED,
    "Crashed": GuestPower.CRASHED,
}


class _TimeoutMixin:
    """A socket timeout, so a hung pool master fails the call; and ``abort`` to unblock a call
    in progress from another thread (closing the event watcher)."""

    _timeout: float
    _live: http.client.HTTPConnection | None = None
    _aborted = False

    def _tune(self, connection: http.client.HTTPConnection) -> http.client.HTTPConnection:
        if self._aborted:  # xmlrpc.client retries once on a new connection: refuse it
            raise ConnectionAbortedError("the XAPI session was closed")
        if connection is self._live:  # xmlrpc.client reuses its connection: tuned already
            return connection
        connection.timeout = self._timeout
        self._live = connection
        connect = connection.connect

        def connect_unless_aborted() -> None:
            connect()
            if self._aborted:  # abort() ran while the socket was being opened
                self.abort()

        connection.connect = connect_unless_aborted  # type: ignore[method-assign]
        return connection

    def rearm(self) -> None:
        """Allow new connections again, once the aborted call has returned."""
        self._aborted = False

    def abort(self) -> None:
        self._aborted = True
        connection = self._live
        sock = None if connection is None else connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Transport(_TimeoutMixin, xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return self._tune(super().make_connection(host))


class _SafeTransport(_TimeoutMixin, xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        connection = super().make_connection(host)
        self._tune(connection)
        return connection


def username(settings: DriverSettings) -> str:
    """``settings.username``, else ``extra["username"]`` (a host registered through the API
    carries its driver settings as ``driver.*`` capabilities), else ``root``."""
    return settings.username or settings.extra.get("username") or "root"


def password(settings: DriverSettings) -> str:
    """The password: ``settings.password``, else the environment variable named by
    ``extra["password_env"]``. Never logged."""

    if settings.password is not None:
        return settings.password
    variable = settings.extra.get("password_env")
    if variable is None:
        raise ConfigError("xenserver driver: set password or extra.password_env")
    value = os.environ.get(variable)
    if value is None:
        raise ConfigError(f"xenserver driver: environment variable {variable} is not set")
    return value


def open_session(settings: DriverSettings, originator: str) -> Any:
    """A logged-in ``XenAPI.Session`` to the pool master named by ``settings.uri``."""
    timeout = float(settings.extra.get("timeout", "30"))
    https = settings.uri.startswith("https:")
    transport = _SafeTransport(timeout) if https else _Transport(timeout)
    session = XenAPI.Session(settings.uri, transport=transport)
    session.xenapi.login_with_password(
        username(settings), password(settings), API_VERSION, originator
    )
    return session


def integer(record: dict[str, Any], field: str) -> int:
    try:
        return int(record[field])
    except (KeyError, TypeError, ValueError):
        raise DriverError(
            f"malformed XAPI record: field {field!r} is {record.get(field)!r}, not an integer",
            code="MALFORMED_REPLY",
        ) from None


def power(record: dict[str, Any]) -> GuestPower:
    return _POWER.get(str(record.get("power_state")), GuestPower.UNKNOWN)


def refused_power(details: list[Any]) -> GuestPower | None:
    """The actual power state a ``VM_BAD_POWER_STATE [vm, expected, actual]`` reports, else
    None (another error, or a reply without the state)."""
    if len(details) < 4 or details[0] != "VM_BAD_POWER_STATE":
        return None
    return _POWER.get(str(details[3]).capitalize(), GuestPower.UNKNOWN)


def vm_uuid(record: dict[str, Any]) -> str:
    """The orchestrator's uuid of a VM: ours when cloudcore created it, else XAPI's."""
    other = record.get("other_config") or {}
    return str(other.get(UUID_KEY) or record["uuid"])


def vm_info(record: dict[str, Any]) -> VMInfo:
    try:
        name = str(record["name_label"])
        uuid = vm_uuid(record)
    except KeyError as exc:
        raise DriverError(f"malformed XAPI VM record: no {exc}", code="MALFORMED_REPLY") from None
    return VMInfo(
        uuid=uuid,
        name=name,
        power=power(record),
        vcpus=integer(record, "VCPUs_at_startup"),
        memory_mib=integer(record, "memory_dynamic_max") // (1024 * 1024),
    )


def belongs_to(record: dict[str, Any], host: str, is_master: bool) -> bool:
    """Whether a VM record is a guest of ``host``: resident there, or halted with affinity for
    it (a halted VM without affinity counts on the pool master)."""
    if record.get("is_a_template") or record.get("is_control_domain"):
        return False
    if record.get("is_a_snapshot"):
        return False
    resident = record.get("resident_on", NULL)
    if resident != NULL:
        return bool(resident == host)
    affinity = record.get("affinity", NULL)
    return bool(affinity == host or (affinity == NULL and is_master))


def snapshot_info(record: dict[str, Any]) -> SnapshotInfo:
    taken = record.get("snapshot_time")
    try:
        text = taken.value if isinstance(taken, xmlrpc.client.DateTime) else str(taken)
        text = text.replace("-", "").rstrip("Z")
        created = datetime.strptime(text, "%Y%m%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise DriverError(
            f"malformed XAPI snapshot_time {taken!r}", code="MALFORMED_REPLY"
        ) from None
    # A checkpoint (memory included) reads Suspended: the VM was running when it was taken.
    was = GuestPower.RUNNING if record.get("power_state") == "Suspended" else GuestPower.STOPPED
    return SnapshotInfo(name=str(record["name_label"]), created_at=created, power=was)


def snapshot_order(record: dict[str, Any]) -> tuple[str, int]:
    taken = record.get("snapshot_time")
    text = taken.value if isinstance(taken, xmlrpc.client.DateTime) else str(taken)
    seq = (record.get("other_config") or {}).get(SNAPSHOT_SEQ_KEY, "0")
    return text, int(seq) if str(seq).isdigit() else 0


def vm_record(spec: DomainSpec, host: str) -> dict[str, Any]:
    """The record ``VM.create`` takes for ``spec``, with affinity for ``host``."""
    mib = 1024 * 1024
    memory = str(spec.memory_mib * mib)
    return {
        "name_label": spec.name,
        "name_description": "defined by cloudcore",
        "is_a_template": False,
        "affinity": host,
        "memory_static_max": str((spec.max_memory_mib or spec.memory_mib) * mib),
        "memory_dynamic_max": memory,
        "memory_dynamic_min": memory,
        "memory_static_min": memory,
        "VCPUs_max": str(spec.max_vcpus or spec.vcpus),
        "VCPUs_at_startup": str(spec.vcpus),
        "VCPUs_params": {},
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "destroy",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "dc"},
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "platform": {"acpi": "1", "apic": "true", "pae": "true", "viridian": "false"},
        "user_version": "1",
        "PCI_bus": "",
        "recommendations": "",
        "other_config": {UUID_KEY: spec.uuid, **spec.extra},
    }
