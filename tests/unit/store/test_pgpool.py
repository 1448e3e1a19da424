"""The PostgreSQL store's connection pool, with stand-in connections (no server needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloudcore.store._pgpool import Pool


class _Conn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return False

    def terminate(self) -> None:
        self.closed = True

    async def close(self) -> None:
        self.closed = True


class _Factory:
    def __init__(self) -> None:
        self.made: list[_Conn] = []

    async def __call__(self) -> Any:
        conn = _Conn(len(self.made))
        self.made.append(conn)
        return conn


async def test_connections_are_reused_and_never_more_than_the_size() -> None:
    factory = _Factory()
    pool = Pool(factory, size=2)
    busy = 0
    peak = 0

    async def use() -> None:
        nonlocal busy, peak
        async with pool.lease():
            busy += 1
            peak = max(peak, busy)
            await asyncio.sleep(0)
            busy -= 1

    await asyncio.gather(*(use() for _ in range(20)))

    assert peak == 2
    assert len(factory.made) == 2


async def test_a_connection_that_failed_is_replaced() -> None:
    factory = _Factory()
    pool = Pool(factory, size=1)
    with pytest.raises(ConnectionResetError):
        async with pool.lease():
            raise ConnectionResetError
    async with pool.lease() as conn:
        assert conn.n == 1
    assert factory.made[0].closed


async def test_a_connection_closed_while_idle_is_not_handed_out() -> None:
    factory = _Factory()
    pool = Pool(factory, size=1)
    async with pool.lease():
        pass
    factory.made[0].closed = True  # the server went away meanwhile
    async with pool.lease() as conn:
        assert conn.n == 1


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    factory = _Factory()
    pool = Pool(factory, size=1)
    holder = pool.lease()
    await holder.__aenter__()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await holder.__aexit__(ConnectionResetError, ConnectionResetError(), None)  # slot freed
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)

    async with asyncio.timeout(1), pool.lease() as conn:
        assert conn.n == 1


async def test_close_wakes_waiters_with_an_error() -> None:
    pool = Pool(_Factory(), size=1)
    holder = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.close()
    with pytest.raises(ConnectionError):
        await waiter
    pool.release(holder, healthy=True)
    assert holder.closed
