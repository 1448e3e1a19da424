"""No event lost to a Redis outage: tasks finish while the bus is down, their ``task.finished``
events wait in the store's outbox, and the relay publishes them once Redis is back."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from actors.registration import bootstrap_demo
from cloudcore.config import DemoSettings
from cloudcore.events.base import START, Event
from cloudcore.events.dedup import SeenIds
from cloudcore.events.redis import RedisEventBus
from cloudcore.store.base import Store
from cloudcore.store.records import Task, TaskState, VMSpec
from tests.cloud import cloud_settings, sqlite_store, start_cloud  # noqa: F401 - fixtures
from tests.integration.state.servers import PrivateRedis
from tests.waiting import eventually

TASKS = 60


@pytest.fixture
def volatile_redis() -> Iterator[PrivateRedis]:
    """A private redis-server without persistence (``--save "" --appendonly no``)."""
    server = PrivateRedis(persistent=False)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.timeout(150)
async def test_every_task_finished_is_delivered_once_across_a_redis_outage(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    volatile_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    settings = cloud_settings(tmp_path)
    settings = msgspec.structs.replace(
        settings, demo=DemoSettings(hosts=2, host_cpus=64, host_memory_mib=65536)
    )
    await bootstrap_demo(sqlite_store, settings)
    bus = await RedisEventBus.connect(volatile_redis.url, stream="cc:events", retention=100_000)
    system, orchestrator = await start_cloud(sqlite_store, settings, {}, bus=bus)

    finished: dict[str, list[Event]] = {}  # task id -> its task.finished events, after de-dup
    copies = 0
    arrived = asyncio.Event()

    async def listen() -> None:
        nonlocal copies
        seen = SeenIds()
        async for event in bus.subscribe(after=START, types=("task.finished",)):
            if not seen.first_time(event.id):
                copies += 1
                continue
            finished.setdefault(event.data["task_id"], []).append(event)
            arrived.set()

    async def until_finished(n: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(finished) < n:
                arrived.clear()
                await arrived.wait()

    async def deploy(n: int) -> Task:
        task = await orchestrator.deploy(
            tenant_id="demo", datacenter_id="dc1", name=f"vm{n}", spec=VMSpec(cpus=1, memory_mib=64)
        )
        return await orchestrator.wait(task.id, 40)

    listener = asyncio.create_task(listen())
    try:
        half = TASKS // 2
        load = [asyncio.create_task(deploy(n)) for n in range(half)]
        await until_finished(5, 30)  # the load is under way and reaching subscribers

        await asyncio.to_thread(volatile_redis.stop)
        # Tasks go on finishing while Redis is down (the second half begins only now, so some
        # do, however fast the first half was): their events wait in the outbox.
        load += [asyncio.create_task(deploy(n)) for n in range(half, TASKS)]
        await eventually(sqlite_store.read_outbox, timeout=30)
        await asyncio.sleep(3)  # the outage itself (a few seconds), not a synchronisation
        during = len(await sqlite_store.read_outbox(1000))
        await asyncio.to_thread(volatile_redis.start)

        tasks = await asyncio.gather(*load)
        assert all(t.state is TaskState.SUCCEEDED for t in tasks), [t.error for t in tasks]
        try:
            await until_finished(TASKS, 40)
        except TimeoutError:
            missing = {t.id for t in tasks} - set(finished)
            outbox = await sqlite_store.read_outbox(1000)
            raise AssertionError(
                f"{len(missing)} task.finished never arrived; outbox holds {len(outbox)} events, "
                f"{sum(e.type == 'task.finished' for e in outbox)} task.finished"
            ) from None
        await eventually(lambda: _empty(sqlite_store), timeout=30)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await system.shutdown()
        await bus.close()

    assert during > 0
    assert set(finished) == {t.id for t in tasks}
    once = Counter(len(events) for events in finished.values())
    assert once == {1: TASKS}, f"task.finished per task: {once} ({copies} copies skipped)"
    assert all(e[0].data["state"] == "SUCCEEDED" for e in finished.values())


async def _empty(store: Store) -> bool:
    return not await store.read_outbox(1)
