"""A database or Redis restarted under a running node: calls fail with a retryable error while
it is down, the node recovers by itself once it is back, and nothing committed is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from cloudcore.errors import BackendUnavailable
from cloudcore.events.base import START, Event
from cloudcore.events.redis import RedisEventBus
from cloudcore.store.postgres import PostgresStore
from cloudcore.store.records import VM, Datacenter, Tenant, VMSpec, VMState, new_id
from tests.integration.state.servers import PrivatePostgres, PrivateRedis

T = TypeVar("T")


async def _eventually(call: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """``call()`` retried while the backend is unavailable, until ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await call()
            except BackendUnavailable:
                await asyncio.sleep(0.1)  # polling a restarting server: no event to await


async def test_the_store_rides_out_a_postgres_restart(postgres_server: PrivatePostgres) -> None:
    store = await PostgresStore.connect(postgres_server.dsn, pool_size=4, command_timeout=5)
    try:
        await store.upgrade()
        tenant = await store.create(Tenant(id=new_id(), name="acme"))
        dc = await store.create(Datacenter(id=new_id(), name="dc1"))
        vms = [
            await store.create(
                VM(
                    id=new_id(),
                    tenant_id=tenant.id,
                    datacenter_id=dc.id,
                    name=f"vm{i}",
                    spec=VMSpec(cpus=1, memory_mib=512),
                )
            )
            for i in range(20)
        ]
        running = await store.update(VM, vms[0].id, expected_version=1, state=VMState.RUNNING)

        await asyncio.to_thread(postgres_server.stop)
        with pytest.raises(BackendUnavailable) as down:
            await store.get(VM, vms[0].id)
        assert down.value.retryable
        with pytest.raises(BackendUnavailable):
            await store.update(VM, vms[1].id, expected_version=1, state=VMState.ERROR)
        await asyncio.to_thread(postgres_server.start)

        assert await _eventually(lambda: store.get(VM, vms[0].id)) == running
        page = await store.list(VM, where={"tenant_id": tenant.id})
        assert sorted(vm.id for vm in page.items) == sorted(vm.id for vm in vms)
        assert (await store.get(VM, vms[1].id)).state == VMState.DEFINED
        after = await store.update(VM, vms[1].id, expected_version=1, state=VMState.STOPPED)
        assert after.version == 2
    finally:
        await store.close()


async def test_the_store_reconnects_after_a_restart_it_did_not_see(
    postgres_server: PrivatePostgres,
) -> None:
    store = await PostgresStore.connect(postgres_server.dsn, pool_size=4, command_timeout=5)
    try:
        await store.upgrade()
        tenant = await store.create(Tenant(id=new_id(), name="acme"))

        await asyncio.to_thread(postgres_server.stop)
        await asyncio.to_thread(postgres_server.start)

        assert await _eventually(lambda: store.get(Tenant, tenant.id)) == tenant
    finally:
        await store.close()


async def test_the_event_bus_rides_out_a_redis_restart(redis_server: PrivateRedis) -> None:
    bus = await RedisEventBus.connect(redis_server.url, stream="cc:events", retention=10_000)
    received: list[Event] = []
    arrived = asyncio.Event()

    async def listen() -> None:
        async for event in bus.subscribe(after=START):
            received.append(event)
            arrived.set()

    async def until_received(n: int) -> None:
        async with asyncio.timeout(20):
            while len(received) < n:
                arrived.clear()
                await arrived.wait()

    listener = asyncio.create_task(listen())
    try:
        before = [await bus.publish("vm.created", f"vm/{i}") for i in range(20)]
        await until_received(20)

        await asyncio.to_thread(redis_server.stop)
        with pytest.raises(BackendUnavailable) as down:
            await bus.publish("vm.created", "vm/lost")
        assert down.value.retryable
        with pytest.raises(BackendUnavailable):
            await bus.read()
        await asyncio.to_thread(redis_server.start)

        first = await _eventually(lambda: bus.publish("vm.started", "vm/0"))
        after = [first] + [await bus.publish("vm.started", f"vm/{i}") for i in range(1, 20)]
        await until_received(40)

        assert received == before + after
        assert await bus.read(after=START) == before + after
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await bus.close()


async def test_a_consumer_group_keeps_its_unacknowledged_events_across_a_redis_restart(
    redis_server: PrivateRedis,
) -> None:
    bus = await RedisEventBus.connect(redis_server.url, stream="cc:events", retention=10_000)
    try:
        sent = [await bus.publish("vm.drifted", f"vm/{i}") for i in range(3)]
        consumer = bus.consume("reconciler", "node-1", after=START)
        async with asyncio.timeout(10):
            first = [await anext(consumer) for _ in range(3)]
        await consumer.aclose()  # type: ignore[attr-defined]
        await bus.ack("reconciler", first[0].position)

        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(redis_server.start)

        again = bus.consume("reconciler", "node-1")
        async with asyncio.timeout(20):
            redelivered = [await anext(again) for _ in range(2)]
        await again.aclose()  # type: ignore[attr-defined]
        assert first == sent
        assert redelivered == sent[1:]
    finally:
        await bus.close()
