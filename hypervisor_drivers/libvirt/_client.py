"""Blocking libvirt calls, one method per driver operation. Runs in worker threads, never on the
event loop. Returns only cloudcore values; libvirt errors are translated by the driver's caller
(``_errors.call_translated``) except where a method needs to look at one itself.

libvirt connections are thread-safe, so several worker threads share one connection.
"""

from __future__ import annotations

import contextlib
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import libvirt
import msgspec
import structlog

from cloudcore.errors import Conflict, IllegalTransition, NotFound, UnsupportedOperation
from hypervisor_drivers.libvirt import _migration, _xml
from hypervisor_drivers.libvirt._events import LifecycleCallbacks, ensure_event_loop
from hypervisor_drivers.types import (
    ConsoleEndpoint,
    ConsoleKind,
    DiskSpec,
    DomainSpec,
    DriverSettings,
    GuestPower,
    HostCapacity,
    HostInventory,
    IscsiDisk,
    LifecycleEvent,
    MigrationProgress,
    NicInfo,
    NicSpec,
    SnapshotInfo,
    VMInfo,
)

__all__ = ["LibvirtClient"]

_log = structlog.get_logger("hypervisor_drivers.libvirt")
#: Where a VM's VNC console listens unless ``extra["vnc_listen"]`` says otherwise: loopback,
#: so only the node on the host reaches it (the gateway's console proxy).
_VNC = "127.0.0.1"

_KEEPALIVE_INTERVAL = 5  # seconds between keepalive probes on remote connections
_KEEPALIVE_COUNT = 3  # unanswered probes before libvirt closes the connection
_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)
_LIVE_AND_CONFIG = (libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "closed by the daemon",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timed out",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
}
_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: GuestPower.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: GuestPower.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: GuestPower.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: GuestPower.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: GuestPower.RUNNING,
    libvirt.VIR_DOMAIN_SHUTOFF: GuestPower.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: GuestPower.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: GuestPower.SUSPENDED,
}


def _power(dom: Any) -> GuestPower:
    state, reason = dom.state()
    power = _STATES.get(state, GuestPower.UNKNOWN)
    if power is GuestPower.STOPPED:
        if reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
            return GuestPower.CRASHED
        if dom.hasManagedSaveImage(0):
            return GuestPower.SUSPENDED
    return power


def _vm_info(dom: Any) -> VMInfo:
    _state, _max_kib, memory_kib, vcpus, _cpu_time = dom.info()
    if dom.isActive() and dom.isPersistent():
        # A running domain reports its balloon, which stays at the maximum when the guest has
        # no balloon driver: report the size it was given, as for a stopped one.
        memory_kib = _xml.domain_facts(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).memory_kib
    return VMInfo(
        uuid=dom.UUIDString(),
        name=dom.name(),
        power=_power(dom),
        vcpus=vcpus,
        memory_mib=memory_kib // 1024,
    )


def _is_not_running(exc: libvirt.libvirtError, dom: Any) -> bool:
    """Whether a failed power-off failed only because the domain had stopped meanwhile."""
    if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
        return True
    try:
        return not dom.isActive()
    except libvirt.libvirtError:
        return False


class LibvirtClient:
    """One libvirt connection and the blocking operations the driver needs."""

    def __init__(self, settings: DriverSettings, publish: Callable[[LifecycleEvent], None]) -> None:
        ensure_event_loop()
        self.scheme = urlsplit(settings.uri).scheme.partition("+")[0]
        self._uri = settings.uri
        self._settings = settings
        self._conn = self._open(settings)
        self._callbacks = LifecycleCallbacks(self._conn, publish)
        self.lost: str | None = None  # why the connection closed under us, once it has
        try:
            self._callbacks.register()
            if self.scheme == "test":
                _migration.TestHosts.add(self._uri, self._conn)
            else:  # the test driver is in-process: nothing to lose
                self._conn.setKeepAlive(_KEEPALIVE_INTERVAL, _KEEPALIVE_COUNT)
                self._conn.registerCloseCallback(self._on_close, None)
            self.domain_type = settings.extra.get("domain_type") or self._default_domain_type()
            # Where each VM's serial port is logged (``<dir>/<domain name>.serial.log``), by
            # virtlogd; unset: the serial port is a pty only.
            self.serial_log_dir: str | None = settings.extra.get("serial_log_dir") or None
        except libvirt.libvirtError:
            self.close()
            raise

    @staticmethod
    def _open(settings: DriverSettings) -> Any:
        if settings.username is None and settings.password is None:
            return libvirt.open(settings.uri)

        def answer(credentials: list[list[Any]], _opaque: Any) -> int:
            for credential in credentials:
                if credential[0] == libvirt.VIR_CRED_AUTHNAME:
                    credential[4] = settings.username
                elif credential[0] == libvirt.VIR_CRED_PASSPHRASE:
                    credential[4] = settings.password
            return 0

        auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]
        return libvirt.openAuth(settings.uri, auth, 0)

    def _default_domain_type(self) -> str:
        # libvirt offers kvm whenever /dev/kvm exists, even when QEMU's user cannot open it;
        # such hosts set extra["domain_type"] = "qemu" (TCG).
        if self.scheme == "test":
            return "test"
        caps = ET.fromstring(self._conn.getCapabilities())
        types = {d.get("type") for d in caps.iterfind("guest/arch[@name='x86_64']/domain")}
        return "kvm" if "kvm" in types else "qemu"

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        # On the libvirt-events thread: the daemon went away, or keepalive gave up.
        self.lost = _CLOSE_REASONS.get(reason, str(reason))
        _log.warning("hypervisor.connection_lost", uri=self._uri, reason=self.lost)

    def close(self) -> None:
        _migration.TestHosts.remove(self._uri, self._conn)
        self._callbacks.deregister()
        if self.scheme != "test" and self.lost is None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):  # already gone
            self._conn.close()

    # -- host ----------------------------------------------------------------------------------

    def inventory(self) -> HostInventory:
        model, memory_mib, cpus, mhz, *_topology = self._conn.getInfo()
        major, rest = divmod(self._conn.getVersion(), 1_000_000)
        minor, release = divmod(rest, 1000)
        return HostInventory(
            hostname=self._conn.getHostname(),
            hypervisor_type=self._conn.getType(),
            hypervisor_version=f"{major}.{minor}.{release}",
            cpu_model=model,
            cpus=cpus,
            memory_kib=memory_mib * 1024,
            extra={
                "uri": self._conn.getURI(),
                "domain_type": self.domain_type,
                "mhz": str(mhz),
                "libvirt_version": str(self._conn.getLibVersion()),
            },
        )

    def capacity(self) -> HostCapacity:
        _model, memory_mib, cpus, *_rest = self._conn.getInfo()
        vcpus = memory_kib = running = 0
        for dom in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                _state, _max, kib, nr_vcpus, _time = dom.info()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined meanwhile
                raise
            vcpus, memory_kib, running = vcpus + nr_vcpus, memory_kib + kib, running + 1
        free = self._conn.getFreeMemory() // 1024
        return HostCapacity(
            cpus=cpus,
            memory_kib=memory_mib * 1024,
            allocated_vcpus=vcpus,
            allocated_memory_kib=memory_kib,
            running_vms=running,
            free_memory_kib=free if free > 0 else None,  # the test driver reports 0
        )

    # -- reading VMs ---------------------------------------------------------------------------

    def _domain(self, uuid: str) -> Any:
        return self._conn.lookupByUUIDString(uuid)

    def list_vms(self) -> list[VMInfo]:
        vms = []
        for dom in self._conn.listAllDomains(0):
            try:
                vms.append(_vm_info(dom))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise  # else undefined meanwhile
        return vms

    def get_vm(self, uuid: str) -> VMInfo:
        return _vm_info(self._domain(uuid))

    def power(self, uuid: str) -> GuestPower:
        return _power(self._domain(uuid))

    # -- lifecycle -----------------------------------------------------------------------------

    def define(self, spec: DomainSpec) -> VMInfo:
        for disk in spec.disks:
            self._ensure_chap_secret(disk)
        listen = None if self.scheme == "test" else self._settings.extra.get("vnc_listen", _VNC)
        serial_log = (
            f"{self.serial_log_dir.rstrip('/')}/{spec.name}.serial.log"
            if self.serial_log_dir and self.scheme != "test"
            else None
        )
        xml = _xml.domain_xml(spec, self.domain_type, listen, serial_log=serial_log)
        return _vm_info(self._conn.defineXML(xml))

    def console(self, uuid: str, kind: ConsoleKind) -> ConsoleEndpoint:
        dom = self._domain(uuid)
        self._require_power(dom, {GuestPower.RUNNING, GuestPower.PAUSED}, "open the console of")
        if kind is ConsoleKind.SERIAL:
            tty = _xml.console_tty(dom.XMLDesc(0))
            if not tty:
                raise UnsupportedOperation(f"VM {uuid} has no serial console")
            return ConsoleEndpoint(kind=kind, path=tty)
        found = _xml.vnc_address(dom.XMLDesc(0))
        if found is None:
            raise UnsupportedOperation(f"VM {uuid} was defined without a graphical console")
        address, port = found
        if address in ("", "0.0.0.0", "::"):  # every address: reach it as the URI's host
            address = urlsplit(self._uri).hostname or "127.0.0.1"
        return ConsoleEndpoint(host=address, port=port)

    def _require_power(self, dom: Any, allowed: set[GuestPower], action: str) -> GuestPower:
        power = _power(dom)
        if power not in allowed:
            raise IllegalTransition(f"cannot {action} VM {dom.UUIDString()}: it is {power.value}")
        return power

    def start(self, uuid: str) -> None:
        dom = self._domain(uuid)
        running, stopped = {GuestPower.RUNNING}, {GuestPower.STOPPED, GuestPower.CRASHED}
        if self._require_power(dom, running | stopped, "start") not in running:
            dom.create()

    def request_shutdown(self, uuid: str) -> None:
        self._domain(uuid).shutdown()

    def power_off(self, uuid: str) -> None:
        dom = self._domain(uuid)
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if not _is_not_running(exc, dom):
                raise

    def reboot(self, uuid: str, hard: bool) -> None:
        dom = self._domain(uuid)
        self._require_power(dom, {GuestPower.RUNNING}, "reboot")
        if hard:
            dom.reset(0)
        else:
            dom.reboot(0)

    def pause(self, uuid: str) -> None:
        dom = self._domain(uuid)
        if self._require_power(dom, {GuestPower.RUNNING, GuestPower.PAUSED}, "pause") is (
            GuestPower.RUNNING
        ):
            dom.suspend()  # libvirt's "suspend" stops the vCPUs: our pause

    def unpause(self, uuid: str) -> None:
        dom = self._domain(uuid)
        if self._require_power(dom, {GuestPower.RUNNING, GuestPower.PAUSED}, "unpause") is (
            GuestPower.PAUSED
        ):
            dom.resume()

    def suspend(self, uuid: str) -> None:
        dom = self._domain(uuid)
        allowed = {GuestPower.RUNNING, GuestPower.PAUSED, GuestPower.SUSPENDED}
        if self._require_power(dom, allowed, "suspend") is not GuestPower.SUSPENDED:
            dom.managedSave(0)

    def resume(self, uuid: str) -> None:
        dom = self._domain(uuid)
        allowed = {GuestPower.RUNNING, GuestPower.SUSPENDED}
        if self._require_power(dom, allowed, "resume") is GuestPower.RUNNING:
            return
        if dom.state()[0] == libvirt.VIR_DOMAIN_PMSUSPENDED:
            dom.pMWakeup(0)
        else:
            dom.create()  # restores the managed save image

    def destroy(self, uuid: str) -> None:
        try:
            dom = self._domain(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return
            raise
        if dom.isActive():
            self.power_off(uuid)
        try:
            dom.undefineFlags(_UNDEFINE_FLAGS)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise

    def migrate(
        self,
        uuid: str,
        destination: DriverSettings,
        live: bool,
        report: Callable[[MigrationProgress], None],
        volumes: Sequence[IscsiDisk] = (),
    ) -> None:
        if destination.uri == self._uri:
            raise Conflict(f"VM {uuid} is on {self._uri} already")
        dom = self._domain(uuid)
        power = _power(dom)
        if self.scheme == "test":
            _migration.simulate(dom, power, destination, live=live, report=report)
            _SimulatedDisks.move(self._uri, uuid, destination.uri)
            return
        _migration.migrate_real(
            self._conn, lambda: self._open(self._settings), self._settings.extra, dom, power,
            destination, live=live, report=report, open_peer=lambda: self._open(destination),
            volumes=volumes,
        )  # fmt: skip

    def abort_job(self, uuid: str) -> None:
        _migration.abort(lambda: self._open(self._settings), uuid)

    # -- changes -------------------------------------------------------------------------------

    def reconfigure(
        self, uuid: str, vcpus: int | None, memory_mib: int | None, live: bool
    ) -> VMInfo:
        dom = self._domain(uuid)
        power = self._require_power(
            dom, {GuestPower.STOPPED, GuestPower.RUNNING, GuestPower.PAUSED}, "reconfigure"
        )
        facts = _xml.domain_facts(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        memory_kib = None if memory_mib is None else memory_mib * 1024
        if power is GuestPower.STOPPED:
            self._resize_stopped(dom, facts, vcpus, memory_kib)
            return _vm_info(dom)
        if not live:
            raise IllegalTransition(f"VM {uuid} is {power.value}; stop it to reconfigure it")
        if (vcpus or 0) > facts.max_vcpus or (memory_kib or 0) > facts.max_memory_kib:
            raise IllegalTransition(
                f"VM {uuid} is {power.value} and the change exceeds its maxima "
                f"({facts.max_vcpus} vCPUs, {facts.max_memory_kib // 1024} MiB); stop it first"
            )
        for flag in _LIVE_AND_CONFIG:  # the test driver refuses both flags in one call
            if vcpus is not None:
                dom.setVcpusFlags(vcpus, flag)
            if memory_kib is not None:
                dom.setMemoryFlags(memory_kib, flag)
        return _vm_info(dom)

    @staticmethod
    def _resize_stopped(
        dom: Any, facts: _xml.DomainFacts, vcpus: int | None, memory_kib: int | None
    ) -> None:
        config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if vcpus is not None:
            if vcpus > facts.max_vcpus:
                dom.setVcpusFlags(vcpus, config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
            dom.setVcpusFlags(vcpus, config)
        if memory_kib is not None:
            if memory_kib > facts.max_memory_kib:
                dom.setMemoryFlags(memory_kib, config | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
            dom.setMemoryFlags(memory_kib, config)

    def create_snapshot(self, uuid: str, name: str) -> SnapshotInfo:
        dom = self._domain(uuid)
        if name in dom.snapshotListNames(0):
            raise Conflict(f"VM {uuid} already has a snapshot named {name!r}")
        return _snapshot_info(dom.snapshotCreateXML(_xml.snapshot_xml(name), 0))

    def list_snapshots(self, uuid: str) -> list[SnapshotInfo]:
        # creationTime has one-second resolution: parents before children breaks the ties.
        listed = self._domain(uuid).listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
        return sorted((_snapshot_info(s) for s in listed), key=lambda s: s.created_at)

    def revert_snapshot(self, uuid: str, name: str) -> None:
        dom = self._domain(uuid)
        dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)

    def delete_snapshot(self, uuid: str, name: str) -> None:
        dom = self._domain(uuid)
        try:
            snapshot = dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return
            raise
        snapshot.delete(0)

    def attach(self, uuid: str, disk: DiskSpec) -> str:
        dom = self._domain(uuid)
        assert disk.serial is not None
        if self.scheme == "test":
            return _SimulatedDisks.attach(self._uri, uuid, disk)
        defined = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        facts = _xml.domain_facts(defined)
        if disk.serial in facts.disks:
            target = ET.fromstring(facts.disks[disk.serial]).find("target")
            return "" if target is None else target.get("dev", "")
        self._ensure_chap_secret(disk)
        index, prefix = 0, _xml.target_prefix(disk)
        while _xml.target_dev(index, prefix) in facts.targets:
            index += 1
        dev = _xml.target_dev(index, prefix)
        if disk.boot_order is not None and not dom.isActive():  # see with_boot_disk
            self._conn.defineXML(_xml.with_boot_disk(defined, disk, dev))
            return dev
        if disk.boot_order is not None:  # a running VM: the order matters at its next boot only
            disk = msgspec.structs.replace(disk, boot_order=None)
        dom.attachDeviceFlags(_xml.disk_xml(disk, dev), self._affect(dom))
        return dev

    def detach(self, uuid: str, serial: str) -> None:
        dom = self._domain(uuid)
        if self.scheme == "test":
            _SimulatedDisks.detach(self._uri, uuid, serial)
            return
        facts = _xml.domain_facts(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if serial in facts.disks:
            dom.detachDeviceFlags(facts.disks[serial], self._affect(dom))
            self._forget_chap_secret(facts.disks[serial])

    def resize_disk(self, uuid: str, serial: str, size_bytes: int) -> None:
        dom = self._domain(uuid)
        if not dom.isActive():
            return
        disk = _xml.domain_facts(dom.XMLDesc(0)).disks.get(serial)
        target = None if disk is None else ET.fromstring(disk).find("target")
        if target is None or not target.get("dev"):
            raise NotFound(f"VM {uuid} has no disk {serial}")
        dom.blockResize(target.get("dev"), size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def _forget_chap_secret(self, disk_xml: str) -> None:
        """The CHAP secret of a detached iSCSI disk: one per target, so no other disk uses it."""
        secret = ET.fromstring(disk_xml).find(".//auth/secret")
        usage = None if secret is None else secret.get("usage")
        if usage is None or not usage.startswith("cloudcore-iscsi-"):
            return
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage).undefine()

    def list_nics(self, uuid: str) -> list[NicInfo]:
        facts = _xml.domain_facts(self._domain(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        return [NicInfo(mac=mac, source=on) for mac, (on, _) in facts.nics.items()]

    def attach_nic(self, uuid: str, nic: NicSpec) -> None:
        dom = self._domain(uuid)
        facts = _xml.domain_facts(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if (nic.mac or "").lower() not in facts.nics:
            dom.attachDeviceFlags(_xml.nic_xml(nic), self._affect(dom))

    def detach_nic(self, uuid: str, mac: str) -> None:
        dom = self._domain(uuid)
        facts = _xml.domain_facts(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if mac.lower() in facts.nics:
            dom.detachDeviceFlags(facts.nics[mac.lower()][1], self._affect(dom))

    @staticmethod
    def _affect(dom: Any) -> int:
        if dom.isActive():
            return int(libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        return int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def _ensure_chap_secret(self, disk: DiskSpec) -> None:
        _xml.ensure_chap_secret(self._conn, disk)


class _SimulatedDisks:
    """Attachments on libvirt's test driver, which cannot attach devices: kept here, per host
    URI and VM, and logged as simulated. The device names say so (``simulated:sda``)."""

    _lock = threading.Lock()
    _attached: dict[tuple[str, str], dict[str, str]] = {}

    @classmethod
    def attach(cls, uri: str, uuid: str, disk: DiskSpec) -> str:
        assert disk.serial is not None
        with cls._lock:
            disks = cls._attached.setdefault((uri, uuid), {})
            if disk.serial not in disks:
                taken = set(disks.values())
                index = 0
                while f"simulated:{_xml.target_dev(index, 'sd')}" in taken:
                    index += 1
                disks[disk.serial] = f"simulated:{_xml.target_dev(index, 'sd')}"
            device = disks[disk.serial]
        _log.info("volume.attach_simulated", vm_uuid=uuid, serial=disk.serial, device=device)
        return device

    @classmethod
    def move(cls, uri: str, uuid: str, destination: str) -> None:
        """The VM migrated (simulated) to the test host ``destination``: its disks with it."""
        with cls._lock:
            disks = cls._attached.pop((uri, uuid), None)
            if disks:
                cls._attached[(destination, uuid)] = disks

    @classmethod
    def detach(cls, uri: str, uuid: str, serial: str) -> None:
        with cls._lock:
            disks = cls._attached.get((uri, uuid), {})
            disks.pop(serial, None)
        _log.info("volume.detach_simulated", vm_uuid=uuid, serial=serial)


def _snapshot_info(snapshot: Any) -> SnapshotInfo:
    root = ET.fromstring(snapshot.getXMLDesc(0))
    state = root.findtext("state", "")
    power = {
        "running": GuestPower.RUNNING,
        "paused": GuestPower.PAUSED,
        "shutoff": GuestPower.STOPPED,
    }.get(state, GuestPower.UNKNOWN)
    created = datetime.fromtimestamp(int(root.findtext("creationTime", "0")), UTC)
    return SnapshotInfo(name=snapshot.getName(), created_at=created, power=power)
