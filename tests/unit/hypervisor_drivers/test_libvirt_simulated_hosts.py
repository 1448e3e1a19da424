"""libvirt specifics on its in-process test driver: simulated hosts and the XML we generate."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hypervisor_drivers.base import DomainSpec, DriverSettings, FileDisk, IscsiDisk, NicSpec
from hypervisor_drivers.libvirt import LibvirtDriver, simulated_host_xml, write_simulated_host
from hypervisor_drivers.libvirt._xml import domain_xml, target_dev


async def test_each_simulated_host_is_an_independent_hypervisor(tmp_path: Path) -> None:
    small = write_simulated_host(tmp_path / "a.xml", cpus=2, memory_kib=4 * 1024 * 1024)
    big = write_simulated_host(tmp_path / "b.xml", cpus=32, memory_kib=256 * 1024 * 1024)
    a, b = LibvirtDriver(DriverSettings(uri=small)), LibvirtDriver(DriverSettings(uri=big))
    await a.connect()
    await b.connect()
    try:
        assert ((await a.host_inventory()).cpus, (await b.host_inventory()).cpus) == (2, 32)
        assert (await b.host_inventory()).memory_kib == 256 * 1024 * 1024
        spec = DomainSpec(uuid=str(uuid.uuid4()), name="only-on-a", vcpus=1, memory_mib=64)
        await a.define_vm(spec)
        assert [vm.name for vm in await a.list_vms()] == ["only-on-a"]
        assert await b.list_vms() == []
    finally:
        await a.close()
        await b.close()


def test_a_simulated_host_needs_a_cpu_and_a_mebibyte() -> None:
    with pytest.raises(ValueError, match="at least"):
        simulated_host_xml(cpus=0, memory_kib=1024)


def test_user_values_are_escaped_in_domain_xml() -> None:
    hostile = "x'/><evil a='"
    spec = DomainSpec(
        uuid=str(uuid.uuid4()),
        name=f"vm<&>{hostile}",
        vcpus=2,
        max_vcpus=4,
        memory_mib=128,
        disks=[
            FileDisk(path=f"/images/{hostile}.qcow2", serial=hostile),
            IscsiDisk(host="10.0.0.1", iqn=f"iqn.x:{hostile}", lun=3, chap_username="u"),
        ],
        nics=[NicSpec(kind="bridge", source=hostile)],
    )
    root = ET.fromstring(domain_xml(spec, "kvm"))
    assert root.findtext("name") == spec.name
    assert root.find("evil") is None and not list(root.iter("evil"))
    vcpu = root.find("vcpu")
    assert vcpu is not None and (vcpu.text, vcpu.get("current")) == ("4", "2")
    disks = root.findall("devices/disk")
    # The volume sits on the virtio-scsi controller.
    assert [d.find("target").get("dev") for d in disks] == ["vda", "sda"]  # type: ignore[union-attr]
    assert disks[0].find("source").get("file") == f"/images/{hostile}.qcow2"  # type: ignore[union-attr]
    source = disks[1].find("source")
    assert source is not None and source.get("name") == f"iqn.x:{hostile}/3"
    assert source.find("auth/secret") is not None
    bridge = root.find("devices/interface/source")
    assert bridge is not None and bridge.get("bridge") == hostile


def test_disk_targets_run_past_z() -> None:
    assert [target_dev(i) for i in (0, 1, 25, 26, 27)] == ["vda", "vdb", "vdz", "vdaa", "vdab"]


def test_a_nic_sits_on_its_bridge_or_on_the_vlan_subinterface_of_its_parent() -> None:
    from hypervisor_drivers.libvirt._xml import domain_facts, domain_xml

    plain = NicSpec(kind="bridge", source="br-lan", mac="52:54:00:AA:00:01")
    tagged = NicSpec(
        kind="bridge",
        source="br-x",
        mac="52:54:00:aa:00:02",
        vlan=42,
        extra={"libvirt.parent": "eth1"},
    )
    untagged = NicSpec(kind="bridge", source="br-v42", mac="52:54:00:aa:00:03", vlan=42)
    spec = DomainSpec(
        uuid=str(uuid.uuid4()), name="n", vcpus=1, memory_mib=64, nics=[plain, tagged, untagged]
    )
    facts = domain_facts(domain_xml(spec, "test"))
    assert {mac: on for mac, (on, _) in facts.nics.items()} == {
        "52:54:00:aa:00:01": "br-lan",
        "52:54:00:aa:00:02": "eth1.42",
        "52:54:00:aa:00:03": "br-v42",
    }
    assert 'type="direct"' in facts.nics["52:54:00:aa:00:02"][1]


def test_a_serial_log_puts_the_console_on_a_logged_serial_port() -> None:
    spec = DomainSpec(uuid=str(uuid.uuid4()), name="logged", vcpus=1, memory_mib=64)
    plain = ET.fromstring(domain_xml(spec, "kvm"))
    assert plain.find("devices/serial") is None
    root = ET.fromstring(domain_xml(spec, "kvm", serial_log="/var/log/x/logged.serial.log"))
    log = root.find("devices/serial/log")
    assert log is not None and log.get("file") == "/var/log/x/logged.serial.log"
    target = root.find("devices/console/target")
    assert target is not None and (target.get("type"), target.get("port")) == ("serial", "0")


def test_a_vm_booted_by_disk_order_has_no_os_boot_and_its_volume_boots_first() -> None:
    from hypervisor_drivers.libvirt._xml import disk_xml, with_boot_disk

    plain = DomainSpec(uuid=str(uuid.uuid4()), name="a", vcpus=1, memory_mib=64)
    defined = domain_xml(plain, "kvm")
    assert ET.fromstring(defined).find("os/boot") is not None
    volume = IscsiDisk(host="10.0.0.1", iqn="iqn.x:v", lun=1, serial="vol-1", boot_order=1)
    disk = ET.fromstring(disk_xml(volume, "sda"))
    assert disk.find("boot") is not None and disk.find("boot").get("order") == "1"  # type: ignore[union-attr]
    # attached to the stopped VM: libvirt refuses <os><boot> beside a per-device order
    root = ET.fromstring(with_boot_disk(defined, volume, "sda"))
    assert root.find("os/boot") is None and root.find("os/type") is not None
    assert root.find("devices/disk/target").get("dev") == "sda"  # type: ignore[union-attr]
    assert root.find("devices/disk/boot").get("order") == "1"  # type: ignore[union-attr]
    given = DomainSpec(uuid=str(uuid.uuid4()), name="c", vcpus=1, memory_mib=64, disks=[volume])
    root = ET.fromstring(domain_xml(given, "kvm"))
    assert root.find("os/boot") is None
    assert root.find("devices/disk/boot").get("order") == "1"  # type: ignore[union-attr]
    assert ET.fromstring(disk_xml(FileDisk(path="/x.qcow2"), "vda")).find("boot") is None
