"""Which disks a libvirt migration copies: those not on a path both hosts list as shared."""

from __future__ import annotations

from hypervisor_drivers.libvirt._disk_copy import LocalDisk, to_copy

_XML = """<domain><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
  <source file='/var/lib/libvirt/images/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/>
  <source file='/srv/shared/data.img'/><target dev='vdb' bus='virtio'/></disk>
<disk type='file' device='cdrom'><source file='/var/lib/libvirt/images/boot.iso'/>
  <target dev='sda' bus='sata'/><readonly/></disk>
<disk type='network' device='disk'><source protocol='iscsi' name='iqn.x/0'/>
  <target dev='sdb' bus='scsi'/></disk>
</devices></domain>"""

_ROOT = LocalDisk(dev="vda", path="/var/lib/libvirt/images/root.qcow2", format="qcow2")
_DATA = LocalDisk(dev="vdb", path="/srv/shared/data.img", format="raw")


def test_disks_outside_the_paths_both_hosts_share_are_copied() -> None:
    both = {"shared_paths": "/srv/shared:/mnt/nfs"}
    assert to_copy(_XML, both, both) == [_ROOT]


def test_a_path_only_one_host_shares_is_copied() -> None:
    assert to_copy(_XML, {"shared_paths": "/srv/shared"}, {"shared_paths": "/mnt"}) == [
        _ROOT,
        _DATA,
    ]


def test_a_prefix_of_a_name_is_not_its_directory() -> None:
    both = {"shared_paths": "/srv/share"}
    assert to_copy(_XML, both, both) == [_ROOT, _DATA]


def test_hosts_that_declare_nothing_share_everything() -> None:
    assert to_copy(_XML, {}, {}) == []


def test_the_targets_definition_names_its_initiator_for_each_volume() -> None:
    from hypervisor_drivers.libvirt._xml import with_initiators
    from hypervisor_drivers.types import IscsiDisk

    xml = """<domain><devices><disk type='network' device='disk'>
      <source protocol='iscsi' name='iqn.t:v1/1'><host name='127.0.0.1' port='3260'/>
        <auth username='cc-v1'><secret type='iscsi' usage='u'/></auth>
        <initiator><iqn name='iqn.h:source'/></initiator></source>
      <target dev='sda' bus='scsi'/><serial>v1</serial></disk>
      <disk type='network' device='disk'><source protocol='iscsi' name='iqn.t:v2/1'>
        <initiator><iqn name='iqn.h:source'/></initiator></source><serial>v2</serial></disk>
    </devices></domain>"""
    moved = IscsiDisk(host="127.0.0.1", iqn="iqn.t:v1", lun=1, chap_username="cc-v1",
                      initiator="iqn.h:target", serial="v1")  # fmt: skip
    out = with_initiators(xml, [moved])
    assert out.count("iqn.h:target") == 1 and out.count("iqn.h:source") == 1  # v2 untouched
    assert out.count("<initiator>") == 2
