"""Stopping a live migration between two real libvirtd instances: an operator's abort and a
deadline that passes. Either way the hypervisor gives up, the QEMU guest keeps running on the
source daemon and on no other, the store agrees (host, state, a fault), and the hold on the
target is given back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.guest import domain_name
from actors.lifecycle import Operation
from actors.operations import MigrateParams
from cloudcore.store import Store
from cloudcore.store.records import VM, Host, StepState, TaskState, VMSpec, VMState
from tests.cloud import Cloud, sqlite_store  # noqa: F401
from tests.integration.migration.conftest import Daemon
from tests.integration.migration.test_two_libvirtds import start_two_host_cloud
from tests.waiting import eventually

# Slow enough that the migration is still copying memory when it is stopped.
_BANDWIDTH_MIB = "1"


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


async def _running_vm(cloud: Cloud) -> VM:
    deployed = await cloud.wait(
        await cloud.orchestrator.deploy(
            tenant_id="t1",
            datacenter_id="dc1",
            name="stayer",
            spec=VMSpec(cpus=1, memory_mib=256),
        ),
        timeout=60,
    )
    assert deployed.state is TaskState.SUCCEEDED, deployed.error
    return await cloud.store.get(VM, deployed.subject.removeprefix("vm/"))


async def _copying(cloud: Cloud, task_id: str) -> bool:
    """The hypervisor's job reports bytes moved: the migration is under way."""
    steps = await cloud.store.list_steps(task_id)
    return bool(steps) and steps[0].data.get("bytes_processed", 0) > 0


@pytest.mark.parametrize("how", ["operator", "deadline"])
async def test_a_stopped_live_migration_leaves_the_guest_running_on_its_source(
    cloud: Cloud, two_libvirtds: tuple[Daemon, Daemon], how: str
) -> None:
    a, b = two_libvirtds
    daemons = {"host-a": a, "host-b": b}
    vm = await _running_vm(cloud)
    source = vm.host_id or ""
    target = "host-b" if source == "host-a" else "host-a"
    before = await _claims(cloud)
    name = domain_name(vm.id)

    params = MigrateParams(host_id=target, deadline=None if how == "operator" else 1.0)
    task = await cloud.orchestrator.operate(vm.id, Operation.MIGRATE, params)
    # While it runs, the target holds the VM's size (recorded in the task) and it is MIGRATING.
    assert task.data["hold"] == {"host": target, "cpus": 1, "memory_mib": 256}
    assert (await _claims(cloud))[target] == (before[target][0] + 1, before[target][1] + 256)
    assert (await cloud.store.get(VM, vm.id)).state is VMState.MIGRATING
    if how == "operator":
        await eventually(lambda: _copying(cloud, task.id), timeout=30)
        await cloud.orchestrator.abort(task.id, "changed my mind")

    ended = await cloud.wait(task, timeout=90)
    assert ended.state is TaskState.FAILED
    expected = "changed my mind" if how == "operator" else "deadline of 1 s"
    assert expected in (ended.error or "")
    (step,) = await cloud.store.list_steps(task.id)
    assert step.state is StepState.FAILED

    assert daemons[source].state(name) == "running"  # on exactly one daemon, running
    assert daemons[target].state(name) == "absent"
    after = await cloud.store.get(VM, vm.id)
    assert (after.host_id, after.state, after.task_id) == (source, VMState.RUNNING, None)
    assert expected in (after.fault or "")
    assert await _claims(cloud) == before  # the hold given back, exactly once

    # The VM is whole: it can migrate again, to the end this time.
    again = await cloud.wait(
        await cloud.orchestrator.operate(vm.id, Operation.MIGRATE, MigrateParams(host_id=target)),
        timeout=150,
    )
    assert again.state is TaskState.SUCCEEDED, again.error
    assert daemons[target].state(name) == "running" and daemons[source].state(name) == "absent"
