"""libvirt XML: domain definitions from a DomainSpec, disk devices, test-driver host files, and the
few facts read back from a domain's XML. Built with ElementTree, so user values are always
escaped, never pasted into markup."""

from __future__ import annotations

import contextlib
import hashlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from hypervisor_drivers.types import DiskSpec, DomainSpec, FileDisk, IscsiDisk, NicSpec

__all__ = [
    "DomainFacts",
    "console_tty",
    "disk_xml",
    "domain_facts",
    "domain_xml",
    "iscsi_secret_usage",
    "iscsi_secret_xml",
    "simulated_host_xml",
    "snapshot_xml",
    "target_dev",
    "vnc_address",
    "with_boot_disk",
    "write_simulated_host",
]

_TARGET_PREFIX = "vd"


#: Milliseconds the firmware waits before it retries a boot that found nothing to boot.
_BOOT_RETRY_MS = 5000


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _text(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def simulated_host_xml(
    *, cpus: int, memory_kib: int, cpu_model: str = "cloudcore-test", mhz: int = 2000
) -> str:
    """A ``<node>`` document for libvirt's test driver: one simulated host with ``cpus`` cores
    and ``memory_kib`` of memory, and no VMs."""
    if cpus < 1 or memory_kib < 1024:
        raise ValueError("a test host needs at least 1 CPU and 1 MiB of memory")
    node = ET.Element("node")
    cpu = _sub(node, "cpu")
    for tag, value in (
        ("mhz", mhz),
        ("model", cpu_model),
        ("active", cpus),
        ("nodes", 1),
        ("sockets", 1),
        ("cores", cpus),
        ("threads", 1),
    ):
        _sub(cpu, tag, str(value))
    _sub(node, "memory", str(memory_kib))
    return _text(node)


def write_simulated_host(path: str | os.PathLike[str], *, cpus: int, memory_kib: int) -> str:
    """Write a test-driver host file to ``path`` and return its URI, ``test:///<abs path>``.
    Every connection opened on that URI is an independent in-memory host."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(simulated_host_xml(cpus=cpus, memory_kib=memory_kib), encoding="utf-8")
    return f"test://{target}"


def iscsi_secret_usage(disk: IscsiDisk) -> str:
    """The usage id of the libvirt secret that holds the CHAP password for ``disk``'s target."""
    digest = hashlib.sha256(f"{disk.host}:{disk.port}/{disk.iqn}".encode()).hexdigest()[:16]
    return f"cloudcore-iscsi-{digest}"


def iscsi_secret_xml(disk: IscsiDisk) -> str:
    secret = ET.Element("secret", ephemeral="no", private="yes")
    _sub(secret, "description", f"CHAP secret for {disk.iqn}")
    usage = _sub(secret, "usage", type="iscsi")
    _sub(usage, "target", iscsi_secret_usage(disk))
    return _text(secret)


def ensure_chap_secret(conn: Any, disk: DiskSpec) -> None:
    """The libvirt secret holding ``disk``'s CHAP password, defined on ``conn``'s daemon and
    set (private: libvirt never gives the value back, so a migration sets it on the target from
    the storage's connection)."""
    if not isinstance(disk, IscsiDisk) or disk.chap_username is None:
        return
    try:
        secret = conn.secretLookupByUsage(
            libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, iscsi_secret_usage(disk)
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SECRET:
            raise
        secret = conn.secretDefineXML(iscsi_secret_xml(disk), 0)
    secret.setValue((disk.chap_password or "").encode(), 0)


def forget_chap_secret(conn: Any, disk: IscsiDisk) -> None:
    """Undefine ``disk``'s CHAP secret on ``conn``'s daemon, if it has it (its VM left)."""
    with contextlib.suppress(libvirt.libvirtError):
        conn.secretLookupByUsage(
            libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, iscsi_secret_usage(disk)
        ).undefine()


def with_initiators(domain_xml: str, volumes: Sequence[IscsiDisk]) -> str:
    """``domain_xml`` with each iSCSI disk whose serial is one of ``volumes`` opened as that
    volume says (the initiator name, the CHAP user): the definition a migration's target gets."""
    by_serial = {v.serial: v for v in volumes if v.serial is not None}
    root = ET.fromstring(domain_xml)
    for disk in root.iterfind("devices/disk[@type='network']"):
        volume = by_serial.get(disk.findtext("serial") or "")
        source = disk.find("source")
        if volume is None or source is None:
            continue
        for old in source.findall("initiator"):
            source.remove(old)
        if volume.initiator is not None:
            _sub(_sub(source, "initiator"), "iqn", name=volume.initiator)
        auth = source.find("auth")
        if auth is not None and volume.chap_username is not None:
            auth.set("username", volume.chap_username)
    return _text(root)


def _disk_element(disk: DiskSpec, target_dev: str) -> ET.Element:
    match disk:
        case FileDisk():
            element = ET.Element("disk", type="file", device="disk")
            _sub(element, "driver", name="qemu", type=disk.format)
            _sub(element, "source", file=disk.path)
        case IscsiDisk():
            element = ET.Element("disk", type="network", device="disk")
            _sub(element, "driver", name="qemu", type="raw")
            source = _sub(element, "source", protocol="iscsi", name=f"{disk.iqn}/{disk.lun}")
            _sub(source, "host", name=disk.host, port=str(disk.port))
            if disk.chap_username is not None:
                auth = _sub(source, "auth", username=disk.chap_username)
                _sub(auth, "secret", type="iscsi", usage=iscsi_secret_usage(disk))
            if disk.initiator is not None:  # QEMU's initiator names itself as the ACL wants
                _sub(_sub(source, "initiator"), "iqn", name=disk.initiator)
    # A volume sits on the virtio-scsi controller: a virtio-blk disk never hot-detaches from a
    # guest that does not acknowledge the PCI removal (see the recipes).
    bus = "scsi" if isinstance(disk, IscsiDisk) else "virtio"
    _sub(element, "target", dev=target_dev, bus=bus)
    if disk.serial is not None:
        _sub(element, "serial", disk.serial)
    if disk.boot_order is not None:  # libvirt refuses it beside <os><boot>: see domain_xml
        _sub(element, "boot", order=str(disk.boot_order))
    if isinstance(disk, FileDisk) and disk.readonly:
        _sub(element, "readonly")
    return element


def disk_xml(disk: DiskSpec, target_dev: str) -> str:
    """A ``<disk>`` device for attach or detach."""
    return _text(_disk_element(disk, target_dev))


def with_boot_disk(xml: str, disk: DiskSpec, target_dev: str) -> str:
    """A stopped domain's definition ``xml`` with ``disk`` (which has a ``boot_order``) added
    as ``target_dev``: the domain then boots by device order, so its ``<os><boot>`` (which
    libvirt adds to a domain defined without one, and refuses beside a per-device order) goes.
    """
    root = ET.fromstring(xml)
    os_element = root.find("os")
    if os_element is not None:
        for boot in os_element.findall("boot"):
            os_element.remove(boot)
    devices = root.find("devices")
    if devices is None:
        devices = _sub(root, "devices")
    devices.append(_disk_element(disk, target_dev))
    return _text(root)


def target_dev(index: int, prefix: str = _TARGET_PREFIX) -> str:
    """``vda``, ``vdb``... ``vdz``, ``vdaa``... (``sda``... with prefix ``sd``)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def target_prefix(disk: DiskSpec) -> str:
    """``sd`` for a disk on the SCSI controller (iSCSI volumes), ``vd`` for virtio disks."""
    return "sd" if isinstance(disk, IscsiDisk) else _TARGET_PREFIX


def _nic_element(nic: NicSpec) -> ET.Element:
    parent = nic.extra.get("libvirt.parent")
    if nic.vlan is not None and parent:  # a VLAN network: macvtap on the tagged subinterface
        element = ET.Element("interface", type="direct")
        _sub(element, "source", dev=f"{parent}.{nic.vlan}", mode="bridge")
    else:
        element = ET.Element("interface", type=nic.kind)
        if nic.kind == "network":
            _sub(element, "source", network=nic.source)
        elif nic.kind == "bridge":
            _sub(element, "source", bridge=nic.source)
    if nic.mac is not None:
        _sub(element, "mac", address=nic.mac.lower())
    _sub(element, "model", type=nic.model)
    return element


def nic_xml(nic: NicSpec) -> str:
    """The ``<interface>`` of ``nic``, for a hot-plug."""
    return _text(_nic_element(nic))


def domain_xml(
    spec: DomainSpec,
    domain_type: str,
    vnc_listen: str | None = None,
    *,
    serial_log: str | None = None,
) -> str:
    """The persistent definition of ``spec`` for a ``domain_type`` (``kvm``, ``qemu``,
    ``test``) hypervisor. ``spec.extra`` may set ``machine`` and ``arch``. ``vnc_listen``:
    the address a VNC console listens on (a port chosen by libvirt at each start); None:
    no graphical console. ``serial_log``: a file the first serial port (the console) is also
    written to."""
    domain = ET.Element("domain", type=domain_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    max_memory_mib = spec.max_memory_mib or spec.memory_mib
    _sub(domain, "memory", str(max_memory_mib * 1024), unit="KiB")
    _sub(domain, "currentMemory", str(spec.memory_mib * 1024), unit="KiB")
    _sub(
        domain,
        "vcpu",
        str(spec.max_vcpus or spec.vcpus),
        placement="static",
        current=str(spec.vcpus),
    )
    os_element = _sub(domain, "os")
    os_type = {"arch": spec.extra.get("arch", "x86_64")}
    if "machine" in spec.extra:
        os_type["machine"] = spec.extra["machine"]
    _sub(os_element, "type", "hvm", **os_type)
    # A VM with NICs and no disk boots from the network (iPXE asks DHCP, then for a script).
    # A VM booted by disk order has no <os><boot>: libvirt refuses both in one domain.
    if not any(d.boot_order for d in spec.disks):
        _sub(os_element, "boot", dev="network" if spec.nics and not spec.disks else "hd")
    if domain_type != "test":  # the firmware's messages on the serial console too; a boot
        # that finds nothing bootable is retried after 5 s (SeaBIOS waits 60 s by default)
        _sub(os_element, "bios", useserial="yes", rebootTimeout=str(_BOOT_RETRY_MS))
    _sub(_sub(domain, "features"), "acpi")
    for event, action in (
        ("on_poweroff", "destroy"),
        ("on_reboot", "restart"),
        ("on_crash", "destroy"),
    ):
        _sub(domain, event, action)
    devices = _sub(domain, "devices")
    _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    counts: dict[str, int] = {}
    for disk in spec.disks:
        prefix = target_prefix(disk)
        devices.append(_disk_element(disk, target_dev(counts.get(prefix, 0), prefix)))
        counts[prefix] = counts.get(prefix, 0) + 1
    for nic in spec.nics:
        devices.append(_nic_element(nic))
    if serial_log is None:
        _sub(devices, "console", type="pty")
    else:
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "log", file=serial_log, append="off")
        _sub(serial, "target", port="0")
        _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    if vnc_listen is not None:
        graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes")
        _sub(graphics, "listen", type="address", address=vnc_listen)
    return _text(domain)


def vnc_address(xml: str) -> tuple[str, int] | None:
    """The listen address and port of a running domain's VNC console (its live XML), None
    when it has none or no port yet (not running)."""
    graphics = ET.fromstring(xml).find("devices/graphics[@type='vnc']")
    if graphics is None:
        return None
    port = int(graphics.get("port", "-1"))
    if port <= 0:
        return None
    listen = graphics.find("listen[@type='address']")
    address = listen.get("address") if listen is not None else graphics.get("listen")
    return address or "", port


def console_tty(xml: str) -> str | None:
    """The pseudo-terminal of a running domain's serial console (its live XML), None when it
    has none."""
    console = ET.fromstring(xml).find("devices/console[@type='pty']")
    return console.get("tty") if console is not None else None


def snapshot_xml(name: str) -> str:
    snapshot = ET.Element("domainsnapshot")
    _sub(snapshot, "name", name)
    return _text(snapshot)


@dataclass(frozen=True)
class DomainFacts:
    """What the driver needs from a domain's XML."""

    max_vcpus: int
    max_memory_kib: int
    memory_kib: int  # <currentMemory>, or <memory> when absent
    disks: dict[str, str]  # serial -> <disk> XML
    targets: list[str]  # every disk target dev in use
    nics: dict[str, tuple[str, str]]  # MAC -> (what it is on, <interface> XML), in order


def domain_facts(xml: str) -> DomainFacts:
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    memory = root.find("memory")
    current = root.find("currentMemory")
    disks: dict[str, str] = {}
    targets: list[str] = []
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev"):
            targets.append(target.get("dev", ""))
        serial = disk.findtext("serial")
        if serial:
            disks[serial] = _text(disk)
    return DomainFacts(
        max_vcpus=int(vcpu.text or 1) if vcpu is not None else 1,
        max_memory_kib=_kib(memory),
        memory_kib=_kib(current if current is not None else memory),
        disks=disks,
        targets=targets,
        nics=_nics(root),
    )


def _nics(root: ET.Element) -> dict[str, tuple[str, str]]:
    nics: dict[str, tuple[str, str]] = {}
    for interface in root.iterfind("devices/interface"):
        mac = interface.find("mac")
        if mac is None or not mac.get("address"):
            continue
        source = interface.find("source")
        attrs = {} if source is None else source.attrib
        on = attrs.get("bridge") or attrs.get("network") or attrs.get("dev") or ""
        nics[mac.get("address", "").lower()] = (on, _text(interface))
    return nics


_UNIT_KIB = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "kb": 1000 / 1024,
    "m": 1024,
    "mib": 1024,
    "mb": 1000**2 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "gb": 1000**3 / 1024,
}


def _kib(element: ET.Element | None) -> int:
    if element is None or not element.text:
        return 0
    return int(int(element.text) * _UNIT_KIB[element.get("unit", "KiB").lower()])
