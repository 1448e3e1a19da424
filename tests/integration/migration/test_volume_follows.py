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

import msgspec
import pytest

from actors.guest import domain_name
from actors.lifecycle import Operation
from actors.operations import MigrateParams
from actors.volume_messages import AttachParams, ListBackend
from cloudcore.config import PoolSettings, StorageConfig
from cloudcore.store import Store
from cloudcore.store.records import VM, Datacenter, TaskState, Tenant, VMSpec, Volume
from hypervisor_drivers.libvirt import LibvirtDriver
from hypervisor_drivers.types import DomainSpec, DriverSettings, IscsiDisk
from storage_drivers.base import StorageSettings, VolumeSpec
from storage_drivers.tgt import TgtDriver
from storage_drivers.types import Connection
from tests.cloud import Cloud, cloud_settings, sqlite_store, start_cloud  # noqa: F401
from tests.contract.storage.tgtd import SOCKET_DIR, Tgtd, why_not_runnable
from tests.integration.migration.conftest import Daemon
from tests.integration.migration.test_two_libvirtds import daemon_host
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
    assert "cloudcore-iscsi-" in b.virsh("secret-list").stdout  # the CHAP secret moved
    assert "cloudcore-iscsi-" not in a.virsh("secret-list").stdout
    await eventually(lambda: _session_initiators(tgtd) == [_B], timeout=20)
    assert (await storage.get_volume(volume_id)).exported_to == _B
    assert f"ACL information:\n        {_B}\n" in tgtd.targets().replace("\r", "")


async def test_through_the_orchestrator_a_volume_follows_its_migrated_vm(
    two_libvirtds: tuple[Daemon, Daemon],
    tgtd: _NetnsTgtd,
    sqlite_store: Store,  # noqa: F811
    tmp_path: Path,
) -> None:
    pool = PoolSettings(
        id="tgt-pool", datacenter="dc1", driver="tgt", path=str(tmp_path / "pool"),
        portal_port=tgtd.portal_port, iqn_prefix="iqn.2026-12.test.cloudcore.orch",
        extra={"control_port": str(tgtd.control_port), "timeout_s": "10"},
    )  # fmt: skip
    conf = msgspec.structs.replace(
        cloud_settings(tmp_path, step_deadline=60.0, migration_deadline=120.0),
        storage=StorageConfig(pools=[pool]),
    )
    await sqlite_store.create(Tenant(id="t1", name="t1"))
    await sqlite_store.create(Datacenter(id="dc1", name="dc1"))
    for daemon in two_libvirtds:
        await sqlite_store.create(daemon_host(conf, daemon, "100"))
    system, orchestrator = await start_cloud(sqlite_store, conf, {})
    cloud = Cloud(orchestrator, sqlite_store, conf, {})
    try:
        await _migrate_with_a_volume(cloud, two_libvirtds, tgtd)
    finally:
        await system.shutdown()


async def _migrate_with_a_volume(
    cloud: Cloud, daemons: tuple[Daemon, Daemon], tgtd: _NetnsTgtd
) -> None:
    storage = cloud.orchestrator.storage
    assert storage is not None
    deployed = await cloud.wait(
        await cloud.orchestrator.deploy(
            tenant_id="t1", datacenter_id="dc1", name="with-volume",
            spec=VMSpec(cpus=1, memory_mib=128), start=True,
        ),
        timeout=90,
    )  # fmt: skip
    assert deployed.state is TaskState.SUCCEEDED, deployed.error
    vm = await cloud.store.get(VM, deployed.subject.removeprefix("vm/"))
    created = await storage.wait(
        (await storage.create_volume(tenant_id="t1", datacenter_id="dc1", name="d", size_gib=1)).id,
        60,
    )
    volume_id = created.subject.removeprefix("volume/")
    attached = await storage.wait(
        (await storage.operate(volume_id, AttachParams(vm_id=vm.id))).id, 90
    )
    assert attached.state is TaskState.SUCCEEDED, attached.error
    prefix = cloud.settings.storage.initiator_prefix
    source = vm.host_id or ""
    target = "host-b" if source == "host-a" else "host-a"
    assert _session_initiators(tgtd) == [f"{prefix}:{source}"]

    task = await cloud.wait(
        await cloud.orchestrator.operate(vm.id, Operation.MIGRATE, MigrateParams(host_id=target)),
        timeout=150,
    )
    assert task.state is TaskState.SUCCEEDED, task.error

    on = {"host-a": daemons[0], "host-b": daemons[1]}[target]
    assert f"<iqn name='{prefix}:{target}'/>" in on.virsh("dumpxml", domain_name(vm.id)).stdout
    await eventually(lambda: _session_initiators(tgtd) == [f"{prefix}:{target}"], timeout=20)
    backend, _ = await storage.pool_ref("tgt-pool").ask(ListBackend())
    assert backend[volume_id] == f"{prefix}:{target}"  # the source's initiator dropped
    assert (await cloud.store.get(Volume, volume_id)).vm_id == vm.id
