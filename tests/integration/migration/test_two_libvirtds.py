"""Live and cold migration through the orchestrator between two real libvirtd instances, each
a host of one datacenter (see conftest): a QEMU guest runs on exactly one daemon afterwards, the
claims moved with it, and the task's step shows the hypervisor's progress."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from actors.guest import domain_name
from actors.lifecycle import Operation
from actors.operations import MigrateParams
from actors.registration import host_record
from cloudcore.config import Settings
from cloudcore.store import Store
from cloudcore.store.records import VM, Datacenter, Host, TaskState, Tenant, VMSpec, VMState
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import Cloud, cloud_settings, sqlite_store, start_cloud  # noqa: F401
from tests.integration.migration.conftest import Daemon

# A cap low enough that even a small guest's memory takes a few job-info polls to move.
_BANDWIDTH_MIB = "2"


@asynccontextmanager
async def start_two_host_cloud(
    store: Store,
    tmp_path: Path,
    daemons: tuple[Daemon, Daemon],
    bandwidth_mib: str,
    **settings: Any,
) -> AsyncIterator[Cloud]:
    """An orchestrator whose datacenter dc1 has the two daemons as hosts host-a and host-b."""
    conf = cloud_settings(tmp_path, step_deadline=60.0, migration_deadline=120.0, **settings)
    await store.create(Tenant(id="t1", name="t1"))
    await store.create(Datacenter(id="dc1", name="dc1"))
    for daemon in daemons:
        await store.create(daemon_host(conf, daemon, bandwidth_mib))
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(store, conf, drivers)
    try:
        yield Cloud(orchestrator, store, conf, drivers)
    finally:
        await system.shutdown()


def daemon_host(conf: Settings, daemon: Daemon, bandwidth_mib: str) -> Host:
    host = host_record(
        conf,
        host_id=f"host-{daemon.name.lower()}",
        datacenter_id="dc1",
        hypervisor="libvirt",
        uri=daemon.uri,
        physical_cpus=2,
        physical_memory_mib=2048,
    )
    host.capabilities.update(
        {"driver.migration_uri": "tcp://127.0.0.1", "driver.migration_bandwidth_mib": bandwidth_mib}
    )
    return host


@pytest.fixture
async def cloud(
    sqlite_store: Store,  # noqa: F811
    tmp_path: Path,
    two_libvirtds: tuple[Daemon, Daemon],
) -> AsyncIterator[Cloud]:
    async with start_two_host_cloud(sqlite_store, tmp_path, two_libvirtds, _BANDWIDTH_MIB) as c:
        yield c


async def _claims(cloud: Cloud) -> dict[str, tuple[int, int]]:
    return {h.id: (h.cpus_used, h.memory_mib_used) for h in (await cloud.store.list(Host)).items}


@pytest.mark.parametrize("start", [True, False], ids=["live", "cold"])
async def test_a_qemu_guest_migrates_between_two_libvirtds_through_the_orchestrator(
    cloud: Cloud, two_libvirtds: tuple[Daemon, Daemon], start: bool
) -> None:
    a, b = two_libvirtds
    daemons = {"host-a": a, "host-b": b}
    deployed = await cloud.wait(
        await cloud.orchestrator.deploy(
            tenant_id="t1",
            datacenter_id="dc1",
            name="mover",
            spec=VMSpec(cpus=1, memory_mib=128),
            start=start,
        ),
        timeout=60,
    )
    assert deployed.state is TaskState.SUCCEEDED, deployed.error
    vm = await cloud.store.get(VM, deployed.subject.removeprefix("vm/"))
    source = vm.host_id or ""
    target = "host-b" if source == "host-a" else "host-a"
    name = domain_name(vm.id)
    before = "running" if start else "shut off"
    assert daemons[source].state(name) == before

    task = await cloud.wait(
        await cloud.orchestrator.operate(vm.id, Operation.MIGRATE, MigrateParams(host_id=target)),
        timeout=150,
    )
    assert task.state is TaskState.SUCCEEDED, task.error

    assert daemons[target].state(name) == before  # on exactly one daemon
    assert daemons[source].state(name) == "absent"
    moved = await cloud.store.get(VM, vm.id)
    assert moved.host_id == target
    assert moved.state is (VMState.RUNNING if start else VMState.STOPPED)
    assert await _claims(cloud) == {source: (0, 0), target: (1, 128)}
    (step,) = await cloud.store.list_steps(task.id)
    assert step.name == "migrate" and step.data["target"] == target
    if start:  # a live migration reports the hypervisor's job: bytes moved of a total
        assert step.data["simulated"] is False
        assert step.data["bytes_total"] > 0 and 0 < step.data["percent"] <= 100
