"""Creating a VM is one transaction: quota, VM, deploy task (and its Idempotency-Key), all or
nothing; and usage recomputed from what exists finds and fixes drift."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudcore.errors import AlreadyExists, Conflict, InvalidRecord, QuotaExceeded
from cloudcore.store.base import Store
from cloudcore.store.records import (
    VM,
    BootVolume,
    Datacenter,
    QuotaDrift,
    Task,
    Tenant,
    VMSpec,
    VMState,
    new_id,
)
from cloudcore.store.usage import vm_usage
from tests.contract.store.factory import Factory


def _vm_and_task(tenant_id: str, dc_id: str, cpus: int = 2) -> tuple[VM, Task]:
    vm = VM(
        id=new_id(uuid=True),
        tenant_id=tenant_id,
        datacenter_id=dc_id,
        name="web",
        spec=VMSpec(cpus=cpus, memory_mib=512),
    )
    task = Task(id=f"task-{vm.id}", tenant_id=tenant_id, kind="vm.deploy", subject=f"vm/{vm.id}")
    return vm, task


async def _usage(store: Store, tenant_id: str) -> dict[str, int]:
    return {q.resource: q.used for q in await store.get_quotas(tenant_id)}


async def _vms(store: Store, tenant_id: str) -> list[VM]:
    return (await store.list(VM, where={"tenant_id": tenant_id}, limit=1000)).items


async def test_create_vm_takes_quota_and_writes_vm_and_task(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "cpus", 8)
    vm, task = _vm_and_task(tenant.id, dc.id, cpus=3)

    stored_vm, stored_task = await store.create_vm(vm, task, vm_usage(vm.spec))

    assert stored_vm.version == 1 and stored_task.version == 1
    assert await store.get(VM, vm.id) == stored_vm
    assert await store.get(Task, task.id) == stored_task
    assert await _usage(store, tenant.id) == {"cpus": 3}


async def test_a_failed_task_insert_leaves_no_vm_and_the_quota_untouched(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "vms", 5)
    vm, task = _vm_and_task(tenant.id, dc.id)
    await make.task(id=task.id)  # the task insert, the create's last write, will fail

    with pytest.raises(AlreadyExists):
        await store.create_vm(vm, task, vm_usage(vm.spec))

    assert await _vms(store, tenant.id) == []
    assert await _usage(store, tenant.id) == {"vms": 0}


async def test_quota_exceeded_names_the_resource_and_writes_nothing(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "vms", 5)
    await store.set_quota(tenant.id, "memory_mib", 256)
    vm, task = _vm_and_task(tenant.id, dc.id)

    with pytest.raises(QuotaExceeded, match="memory_mib"):
        await store.create_vm(vm, task, vm_usage(vm.spec))

    assert await _vms(store, tenant.id) == []
    assert (await store.list(Task, where={"tenant_id": tenant.id})).items == []
    assert await _usage(store, tenant.id) == {"memory_mib": 0, "vms": 0}


@pytest.mark.parametrize("field", ["tenant_id", "datacenter_id"])
async def test_a_missing_reference_is_named_not_a_foreign_key_message(
    store: Store, make: Factory, field: str
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    ids = {"tenant_id": tenant.id, "datacenter_id": dc.id, field: "nope"}
    vm, task = _vm_and_task(ids["tenant_id"], ids["datacenter_id"])

    with pytest.raises(InvalidRecord, match=rf"^{field}: no \w+ 'nope'$"):
        await store.create_vm(vm, task, vm_usage(vm.spec))
    with pytest.raises(InvalidRecord, match=rf"^{field}: no \w+ 'nope'$"):
        await store.create(vm)


async def test_a_create_under_a_key_another_attempt_took_over_writes_nothing(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    first, held = await store.claim_idempotency_key("p", "k", "f", ttl=60, lease=0)
    second, took_over = await store.claim_idempotency_key("p", "k", "f", ttl=60, lease=0)
    assert held and took_over and first.owner != second.owner
    vm, task = _vm_and_task(tenant.id, dc.id)

    with pytest.raises(Conflict, match="'k'"):
        await store.create_vm(vm, task, vm_usage(vm.spec), claim=first)

    assert await _vms(store, tenant.id) == []
    await store.create_vm(vm, task, vm_usage(vm.spec), claim=second)
    stored = await store.get_idempotency_key("p", "k")
    assert stored is not None and stored.task_id == task.id


async def test_reconcile_finds_and_fixes_drift(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    for resource in ("vms", "cpus", "memory_mib", "volumes", "gpus"):
        await store.set_quota(tenant.id, resource, 100_000)
    await make.vm(tenant, dc, spec=VMSpec(cpus=2, memory_mib=1024))
    await make.vm(tenant, dc, spec=VMSpec(cpus=4, memory_mib=512), state=VMState.DELETED)
    await store.consume_quota(tenant.id, {"vms": 3, "cpus": 9, "gpus": 7})  # leaked

    found = await store.reconcile_quotas(fix=False)

    assert sorted(found, key=lambda d: d.resource) == [
        QuotaDrift(tenant_id=tenant.id, resource="cpus", recorded=9, actual=2),
        QuotaDrift(tenant_id=tenant.id, resource="memory_mib", recorded=0, actual=1024),
        QuotaDrift(tenant_id=tenant.id, resource="vms", recorded=3, actual=1),
    ]
    assert (await _usage(store, tenant.id))["vms"] == 3  # only reported
    assert len(await store.reconcile_quotas()) == 3
    assert await _usage(store, tenant.id) == {
        "cpus": 2,
        "gpus": 7,  # not a resource the rule counts: left alone
        "memory_mib": 1024,
        "vms": 1,
        "volumes": 0,
    }
    assert await store.reconcile_quotas() == []


async def test_reconcile_counts_the_larger_size_of_a_resize_in_flight(
    store: Store, make: Factory
) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    await store.set_quota(tenant.id, "cpus", 64)
    resize = await make.task(kind="vm.reconfigure", data={"cpus": 6})
    await make.vm(
        tenant,
        dc,
        spec=VMSpec(cpus=2, memory_mib=512),
        state=VMState.RECONFIGURING,
        task_id=resize.id,
    )
    await store.consume_quota(tenant.id, {"cpus": 6})  # taken when the resize was asked for

    assert await store.reconcile_quotas() == []


class _Model:
    """What the test expects: VMs alive per tenant and their cpus."""

    def __init__(self) -> None:
        self.alive: dict[str, VM] = {}


async def _check(store: Store, tenant: Tenant, maximum: int) -> None:
    alive = [vm for vm in await _vms(store, tenant.id) if vm.state is not VMState.DELETED]
    usage = await _usage(store, tenant.id)
    assert usage["cpus"] == sum(vm.spec.cpus for vm in alive) <= maximum
    assert usage["vms"] == len(alive)
    for vm in alive:
        await store.get(Task, f"task-{vm.id}")  # no VM without its task


async def _burst(store: Store, tenant: Tenant, dc: Datacenter, sizes: list[int]) -> None:
    async def one(cpus: int) -> None:
        vm, task = _vm_and_task(tenant.id, dc.id, cpus=cpus)
        with contextlib.suppress(QuotaExceeded):
            await store.create_vm(vm, task, vm_usage(vm.spec))

    await asyncio.gather(*(one(cpus) for cpus in sizes))


async def _delete_some(store: Store, tenant: Tenant, rng: random.Random) -> None:
    for vm in await _vms(store, tenant.id):
        if vm.state is not VMState.DELETED and rng.random() < 0.3:
            await store.update(VM, vm.id, expected_version=vm.version, state=VMState.DELETED)
            await store.release_quota(tenant.id, vm_usage(vm.spec))


_STEPS = st.lists(
    st.one_of(
        st.lists(st.integers(1, 6), min_size=1, max_size=12).map(lambda s: ("create", s)),
        st.just(("delete", [])),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=_STEPS, seed=st.integers(0, 2**16))
async def test_concurrent_creates_never_exceed_a_quota(
    store: Store, make: Factory, steps: list[tuple[str, list[int]]], seed: int
) -> None:
    rng = random.Random(seed)
    tenant, dc = await make.tenant(), await make.datacenter()
    maximum = 16
    await store.set_quota(tenant.id, "cpus", maximum)
    await store.set_quota(tenant.id, "vms", 10_000)
    for kind, sizes in steps:
        if kind == "create":
            await _burst(store, tenant, dc, sizes)
        else:
            await _delete_some(store, tenant, rng)
        await _check(store, tenant, maximum)


async def test_a_vm_spec_keeps_its_boot_volume(store: Store, make: Factory) -> None:
    tenant, dc = await make.tenant(), await make.datacenter()
    boot = BootVolume(volume_id="vol-1", delete_on_termination=True)
    vm = await make.vm(tenant, dc, spec=VMSpec(cpus=1, memory_mib=64, boot_volume=boot))
    assert (await store.get(VM, vm.id)).spec.boot_volume == boot
    plain = await make.vm(tenant, dc)
    assert (await store.get(VM, plain.id)).spec.boot_volume is None
