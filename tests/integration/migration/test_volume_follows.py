"""An iSCSI volume on a real tgtd, attached to a QEMU guest on libvirtd A, follows the guest's
live migration to libvirtd B (see conftest; tgtd runs in the daemons' network namespace, so
QEMU reaches its portal): the export admits B's initiator first, libvirt migrates with the
network disk (nothing copied), and afterwards tgtd's session for the volume is B's QEMU's,
logged in with B's initiator name, and the export admits B only."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_drivers.libvirt import LibvirtDriver
from hypervisor_drivers.types import DomainSpec, DriverSettings, IscsiDisk
from storage_drivers.base import StorageSettings, VolumeSpec
from storage_drivers.tgt import TgtDriver
from storage_drivers.types import Connection
from tests.contract.storage.tgtd import SOCKET_DIR, Tgtd, why_not_runnable
from tests.integration.migration.conftest import Daemon
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(240)

_A, _B = "iqn.2026-12.test.cloudcore.host:a", "iqn.2026-12.test.cloudcore.host:b"


class _NetnsTgtd(Tgtd):
    """The private tgtd, its portal inside network namespace ``netns`` (its control socket is
    a file, reached from here)."""

    def __init__(self, workdir: Path, netns: str) -> None:
        super().__init__(workdir)
        self.netns = netns

    def start(self) -> None:
        SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "tgtd.log").open("ab") as out:
            self._proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "tgtd", "-f", "-C", str(self.control_port),
                 "--iscsi", f"portal=127.0.0.1:{self.portal_port}"],
                stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while self._tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target").returncode:
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"tgtd did not come up: see {self.workdir}/tgtd.log")
            time.sleep(0.05)  # a daemon coming up: nothing to await but its socket

    def targets(self) -> str:
        return self._tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target").stdout.decode()


@pytest.fixture
def tgtd(two_libvirtds: tuple[Daemon, Daemon], tmp_path: Path) -> Iterator[_NetnsTgtd]:
    reason = why_not_runnable()
    if reason is not None:
        pytest.skip(reason)
    netns = subprocess.run(
        ["ip", "netns", "identify", str(two_libvirtds[0].process.pid)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    daemon = _NetnsTgtd(tmp_path, netns)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _disk(volume_id: str, c: Connection) -> IscsiDisk:
    return IscsiDisk(host=c.portal_host, port=c.portal_port, iqn=c.target_iqn, lun=c.lun,
                     chap_username=c.chap_username, chap_password=c.chap_secret,
                     initiator=c.initiator, serial=volume_id)  # fmt: skip


def _session_initiators(tgtd: _NetnsTgtd) -> list[str]:
    return [
        line.split("Initiator:", 1)[1].split()[0]
        for line in tgtd.targets().splitlines()
        if "Initiator:" in line
    ]


async def test_an_attached_iscsi_volume_follows_its_guest(
    two_libvirtds: tuple[Daemon, Daemon], tgtd: _NetnsTgtd, tmp_path: Path
) -> None:
    a, b = two_libvirtds
    storage = TgtDriver(
        StorageSettings(
            pool=str(tmp_path / "pool"),
            portal_port=tgtd.portal_port,
            iqn_prefix="iqn.2026-12.test.cloudcore.vol",
            extra={"control_port": str(tgtd.control_port), "timeout_s": "10"},
        )
    )
    await storage.connect()
    volume_id = f"v{uuid.uuid4().hex[:8]}"
    await storage.create_volume(VolumeSpec(volume_id=volume_id, size_mib=64))
    on_a = await storage.export_volume(volume_id, _A)

    extra = {"migration_uri": "tcp://127.0.0.1"}
    source = LibvirtDriver(DriverSettings(uri=a.uri, extra=extra))
    await source.connect()
    try:
        vm = str(uuid.uuid4())
        await source.define_vm(DomainSpec(uuid=vm, name=f"vol-{vm[:8]}", vcpus=1, memory_mib=64))
        await source.start_vm(vm)
        await source.attach_volume(vm, _disk(volume_id, on_a))
        assert _session_initiators(tgtd) == [_A]  # A's QEMU logged in as A

        on_b = await storage.export_also(volume_id, _B)
        await source.migrate_vm(
            vm, DriverSettings(uri=b.uri, extra=extra), live=True, volumes=[_disk(volume_id, on_b)]
        )
        await storage.unexport_from(volume_id, _A)
    finally:
        await source.close()

    assert b.state(f"vol-{vm[:8]}") == "running" and a.state(f"vol-{vm[:8]}") == "absent"
    xml = b.virsh("dumpxml", f"vol-{vm[:8]}").stdout
    assert f"<iqn name='{_B}'/>" in xml and _A not in xml
    await eventually(lambda: _session_initiators(tgtd) == [_B], timeout=20)
    assert (await storage.get_volume(volume_id)).exported_to == _B
    assert f"ACL information:\n        {_B}\n" in tgtd.targets().replace("\r", "")
