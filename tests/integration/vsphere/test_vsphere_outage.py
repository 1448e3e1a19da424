"""vcsim stopped under a connected host: the driver's calls fail with BackendUnavailable, the
host actor marks the host UNREACHABLE, and when a vCenter answers again on the same port the host
actor logs in anew (a fresh driver and session) and the host is HEALTHY again; the store keeps
every record through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

pytest.importorskip("pyVmomi", reason="the vsphere extra (pyvmomi) is not installed")

from actors.registration import host_record
from cloudcore.errors import BackendUnavailable
from cloudcore.runtime import ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import VM, Datacenter, Host, HostHealth, Task, Tenant, VMSpec
from hypervisor_drivers.base import HypervisorDriver
from tests import vcsim
from tests.cloud import Cloud, cloud_settings, sqlite_store, start_cloud  # noqa: F401
from tests.waiting import eventually

HOST = "esx-0"


@pytest.fixture
async def sim() -> AsyncIterator[vcsim.Vcsim]:
    with vcsim.running_vcsim("-cluster-host", "1", "-host", "0", "-ds", "1") as running:
        yield running


async def _host_on(store: Store, cloud_dir: Path, sim: vcsim.Vcsim) -> tuple[ActorSystem, Cloud]:
    settings = cloud_settings(cloud_dir, sweep_interval=0.3, reconnect_delay=0.1)
    await store.create(Tenant(id="t1", name="t1"))
    await store.create(Datacenter(id="vc", name="vc"))
    body = vcsim.host_registration(sim, "DC0_C0_H0", host_id=HOST, datacenter_id="vc")
    host = host_record(
        settings,
        host_id=HOST,
        datacenter_id="vc",
        hypervisor="vsphere",
        uri=body["address"],
        physical_cpus=body["cpus"],
        physical_memory_mib=body["memory_mib"],
    )
    capabilities = {**host.capabilities, **body["capabilities"]}
    await store.create(msgspec.structs.replace(host, capabilities=capabilities))
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(store, settings, drivers)
    return system, Cloud(orchestrator, store, settings, drivers)


async def _health(store: Store, wanted: HostHealth) -> Host | None:
    host = await store.get(Host, HOST)
    return host if host.health is wanted else None


@pytest.mark.timeout(120)
async def test_a_stopped_vcsim_marks_the_host_unreachable_and_a_restarted_one_reconnects_it(
    sim: vcsim.Vcsim,
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    system, cloud = await _host_on(sqlite_store, tmp_path, sim)
    try:
        task = await cloud.orchestrator.deploy(
            tenant_id="t1", datacenter_id="vc", name="keeper", spec=VMSpec(cpus=1, memory_mib=64)
        )
        assert (await cloud.wait(task, timeout=30)).error is None
        vm_id = task.subject.removeprefix("vm/")
        before = await sqlite_store.get(VM, vm_id)
        lost_driver = cloud.drivers[HOST]

        sim.stop()
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await lost_driver.list_vms()
        await eventually(lambda: _health(sqlite_store, HostHealth.UNREACHABLE), timeout=10)
        assert cloud.drivers[HOST] is not lost_driver  # the host actor gave up on it

        back = vcsim.start_vcsim("-cluster-host", "1", "-host", "0", "-ds", "1", port=sim.port)
        try:
            assert back.uri == sim.uri  # the same vCenter address, a fresh inventory
            await eventually(lambda: _health(sqlite_store, HostHealth.HEALTHY), timeout=20)
            fresh = cloud.drivers[HOST]
            assert (await fresh.host_inventory()).hostname == "DC0_C0_H0"

            # Nothing stored was lost through the outage.
            after = await sqlite_store.get(VM, vm_id)
            assert (after.id, after.host_id, after.spec) == (before.id, before.host_id, before.spec)
            assert (await sqlite_store.get(Task, task.id)).error is None
            # And the reconnected host takes new VMs.
            again = await cloud.orchestrator.deploy(
                tenant_id="t1", datacenter_id="vc", name="after", spec=VMSpec(cpus=1, memory_mib=64)
            )
            assert (await cloud.wait(again, timeout=30)).error is None
            made = again.subject.removeprefix("vm/")
            assert made in {vm.uuid for vm in await fresh.list_vms()}
        finally:
            back.stop()
    finally:
        await system.shutdown()
