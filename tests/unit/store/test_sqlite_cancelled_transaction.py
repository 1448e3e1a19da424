"""A SQLite transaction whose caller is cancelled at any of its awaits leaves no transaction
open behind it: the next writer is not refused "cannot start a transaction within a
transaction" (what a node stopped with volume work in flight used to leave its store in)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudcore.store.records import Tenant
from cloudcore.store.sqlite import SqliteStore


@pytest.mark.parametrize("at", range(3))
async def test_a_cancelled_transaction_leaves_the_writer_free(tmp_path: Path, at: int) -> None:
    store = await SqliteStore.connect(tmp_path / "c.db")
    await store.upgrade()
    try:
        started = asyncio.Event()

        async def write() -> None:
            async with store._transaction() as conn:
                started.set()
                for _ in range(at):
                    await conn.execute("SELECT 1")
                await asyncio.Event().wait()  # cut here by the cancellation

        first = asyncio.create_task(write())
        await started.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first

        await store.create(Tenant(id="t1", name="t1"))  # a transaction of its own
        async with store._transaction() as conn:
            await conn.execute("SELECT 1")
        assert (await store.get(Tenant, "t1")).name == "t1"
    finally:
        await store.close()


async def test_a_begin_whose_caller_is_cancelled_is_rolled_back(tmp_path: Path) -> None:
    """Cancelled while BEGIN runs in aiosqlite's thread: the BEGIN still runs, then the
    ROLLBACK asked after it."""
    store = await SqliteStore.connect(tmp_path / "c.db")
    await store.upgrade()
    try:
        for _ in range(20):
            entered = asyncio.create_task(store._transaction().__aenter__())
            await asyncio.sleep(0)  # BEGIN asked of the thread, its answer not read yet
            entered.cancel()
            with pytest.raises(asyncio.CancelledError):
                await entered
            async with store._transaction() as conn:
                await conn.execute("SELECT 1")
    finally:
        await store.close()
