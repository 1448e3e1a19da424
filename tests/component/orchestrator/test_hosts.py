"""Hosts: connection with backoff, health apart from admin state."""

from __future__ import annotations

from pathlib import Path

from actors.orchestrator import Orchestrator
from actors.registration import host_record
from actors.services import Services
from cloudcore.events.local import LocalEventBus
from cloudcore.runtime import ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import AdminState, Datacenter, Host, HostHealth, Tenant
from hypervisor_drivers.libvirt import write_simulated_host
from tests.cloud import cloud_settings
from tests.waiting import eventually


async def test_a_host_whose_hypervisor_is_not_there_yet_is_retried_until_it_is(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path, reconnect_delay=0.05)
    host_file = tmp_path / "late-host.xml"  # not written yet: the hypervisor is not there
    await sqlite_store.create(Tenant(id="t1", name="t1"))
    await sqlite_store.create(Datacenter(id="dc1", name="dc1"))
    await sqlite_store.create(
        host_record(
            settings,
            host_id="late",
            datacenter_id="dc1",
            hypervisor="libvirt",
            uri=f"test://{host_file}",
            physical_cpus=4,
            physical_memory_mib=4096,
        )
    )
    system = ActorSystem("test-node", settings.runtime)
    try:
        await Orchestrator.start(
            system, Services(sqlite_store, LocalEventBus(), settings.orchestrator)
        )

        async def health_is(expected: HostHealth) -> bool:
            return (await sqlite_store.get(Host, "late")).health is expected

        await eventually(lambda: health_is(HostHealth.UNREACHABLE))
        write_simulated_host(host_file, cpus=4, memory_kib=4096 * 1024)
        await eventually(lambda: health_is(HostHealth.HEALTHY), timeout=10)
        host = await sqlite_store.get(Host, "late")
        assert host.admin_state is AdminState.ENABLED  # health never touches admin state
    finally:
        await system.shutdown()


async def test_a_node_with_a_datacenter_capability_serves_that_datacenter_alone(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path)
    await sqlite_store.create(Tenant(id="t1", name="t1"))
    for dc in ("dc1", "dc2"):
        await sqlite_store.create(Datacenter(id=dc, name=dc))
    system = ActorSystem("dc2-node", settings.runtime)
    try:
        services = Services(sqlite_store, LocalEventBus(), settings.orchestrator)
        await Orchestrator.start(system, services, datacenter="dc2")
        assert [a.path for a in system.tree("/user/dc").children] == ["/user/dc/dc2"]
    finally:
        await system.shutdown()


async def test_a_datacenter_and_a_host_registered_at_run_time_take_vms(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from actors.messages import GetHost
    from cloudcore.store.records import VM, TaskState, VMSpec

    settings = cloud_settings(tmp_path)
    await sqlite_store.create(Tenant(id="t1", name="t1"))
    system = ActorSystem("test-node", settings.runtime)
    try:
        orchestrator = await Orchestrator.start(
            system, Services(sqlite_store, LocalEventBus(), settings.orchestrator)
        )
        assert system.tree("/user/dc").children == ()  # an empty store: nothing to run
        dc = await sqlite_store.create(Datacenter(id="dc9", name="dc9"))
        await orchestrator.add_datacenter(dc)
        uri = write_simulated_host(tmp_path / "new.xml", cpus=4, memory_kib=4096 * 1024)
        host = await sqlite_store.create(
            host_record(
                settings,
                host_id="new",
                datacenter_id="dc9",
                hypervisor="libvirt",
                uri=uri,
                physical_cpus=4,
                physical_memory_mib=4096,
            )
        )
        ref = await orchestrator.add_host(host)
        assert ref == await orchestrator.add_host(host)  # registering twice changes nothing

        async def healthy() -> bool:
            seen: Host = await ref.ask(GetHost())
            return seen.health is HostHealth.HEALTHY

        await eventually(healthy)
        task = await orchestrator.deploy(
            tenant_id="t1", datacenter_id="dc9", name="first", spec=VMSpec(cpus=1, memory_mib=64)
        )
        assert (await orchestrator.wait(task.id, timeout=20)).state is TaskState.SUCCEEDED
        assert (await sqlite_store.get(VM, task.subject.removeprefix("vm/"))).host_id == "new"
    finally:
        await system.shutdown()
