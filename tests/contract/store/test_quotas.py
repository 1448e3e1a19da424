"""Quotas: check and consume several resources at once, all or nothing."""

from __future__ import annotations

import asyncio

import pytest

from cloudcore.errors import QuotaExceeded
from cloudcore.store.base import Store
from tests.contract.store.factory import Factory


async def test_consume_counts_usage_up_to_the_maximum(store: Store, make: Factory) -> None:
    tenant = await make.tenant()
    await store.set_quota(tenant.id, "cpus", 8)

    used = await store.consume_quota(tenant.id, {"cpus": 6})

    assert [(q.resource, q.used, q.maximum) for q in used] == [("cpus", 6, 8)]
    with pytest.raises(QuotaExceeded, match="cpus"):
        await store.consume_quota(tenant.id, {"cpus": 3})


async def test_a_refused_request_consumes_none_of_its_resources(
    store: Store, make: Factory
) -> None:
    tenant = await make.tenant()
    await store.set_quota(tenant.id, "cpus", 8)
    await store.set_quota(tenant.id, "vms", 1)
    await store.consume_quota(tenant.id, {"vms": 1})

    with pytest.raises(QuotaExceeded, match="vms"):
        await store.consume_quota(tenant.id, {"cpus": 2, "vms": 1})

    usage = {q.resource: q.used for q in await store.get_quotas(tenant.id)}
    assert usage == {"cpus": 0, "vms": 1}


async def test_concurrent_consumers_never_exceed_the_quota(store: Store, make: Factory) -> None:
    tenant = await make.tenant()
    await store.set_quota(tenant.id, "vms", 5)

    results = await asyncio.gather(
        *(store.consume_quota(tenant.id, {"vms": 1}) for _ in range(12)), return_exceptions=True
    )

    assert sum(isinstance(r, QuotaExceeded) for r in results) == 7
    assert [q.used for q in await store.get_quotas(tenant.id)] == [5]


async def test_resources_without_a_quota_are_unlimited(store: Store, make: Factory) -> None:
    tenant = await make.tenant()
    assert await store.consume_quota(tenant.id, {"gpus": 1000}) == []


async def test_release_gives_back_and_never_goes_below_zero(store: Store, make: Factory) -> None:
    tenant = await make.tenant()
    await store.set_quota(tenant.id, "cpus", 8)
    await store.consume_quota(tenant.id, {"cpus": 4})

    await store.release_quota(tenant.id, {"cpus": 3})
    assert [q.used for q in await store.get_quotas(tenant.id)] == [1]
    await store.release_quota(tenant.id, {"cpus": 5})
    assert [q.used for q in await store.get_quotas(tenant.id)] == [0]


async def test_changing_the_maximum_keeps_the_usage(store: Store, make: Factory) -> None:
    tenant = await make.tenant()
    await store.set_quota(tenant.id, "cpus", 8)
    await store.consume_quota(tenant.id, {"cpus": 4})

    quota = await store.set_quota(tenant.id, "cpus", 2)

    assert (quota.maximum, quota.used) == (2, 4)
    with pytest.raises(QuotaExceeded):
        await store.consume_quota(tenant.id, {"cpus": 1})
