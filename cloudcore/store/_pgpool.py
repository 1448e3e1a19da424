"""A small connection pool for asyncpg, cheaper per call than ``asyncpg.Pool``.

The store borrows a connection for every statement, so the cost of borrowing matters: this pool
is a list of idle connections and a queue of waiters, nothing more. A connection that saw an
unexpected error (a lost server, a cancelled call) is closed, not reused; a borrower that finds
the pool full waits for a connection or for leave to open a new one. Connections open lazily, so
after a server restart the next borrower simply connects again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import asyncpg.exceptions as pg  # type: ignore[import-untyped]

from cloudcore.errors import CloudcoreError

__all__ = ["Pool"]

Connect = Callable[[], Coroutine[Any, Any, Any]]


class Pool:
    """At most ``size`` connections made by ``connect``; borrow one with ``async with lease()``."""

    def __init__(self, connect: Connect, size: int) -> None:
        self._connect = connect
        self._size = size
        self._open = 0
        self._idle: list[Any] = []
        # Each waiter gets a connection, or None: leave to open one itself.
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def lease(self, transaction: bool = False) -> _Lease:
        return _Lease(self, transaction)

    async def acquire(self) -> Any:
        if self._closed:
            raise ConnectionError("the connection pool is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._open -= 1  # the server closed it while it was idle (a restart)
        if self._open >= self._size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # pass on what we were given
                    given = waiter.result()
                    if given is None:
                        self._open -= 1
                    self._give(given)
                raise
            if conn is not None:
                return conn
            if self.closed:  # woken by close()
                self._open -= 1
                raise ConnectionError("the connection pool is closed")
        else:
            self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._give(None)
            raise

    def release(self, conn: Any, healthy: bool) -> None:
        if healthy and not self._closed and not conn.is_closed():
            self._give(conn)
            return
        conn.terminate()
        self._open -= 1
        self._give(None)

    def _give(self, conn: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._open += 1
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    def discard_idle(self) -> None:
        """Close the idle connections (after one was found dead, the others likely are too)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.terminate()
            self._open -= 1

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connection pool is closed"))
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except (OSError, TimeoutError):
                conn.terminate()


class _Lease:
    """``async with`` a borrowed connection, in a transaction if asked."""

    __slots__ = ("_conn", "_pool", "_transaction", "_tx")

    def __init__(self, pool: Pool, transaction: bool) -> None:
        self._pool = pool
        self._transaction = transaction
        self._tx: Any = None

    async def __aenter__(self) -> Any:
        self._conn = await self._pool.acquire()
        if self._transaction:
            try:
                self._tx = self._conn.transaction()
                await self._tx.start()
            except BaseException:
                self._pool.release(self._conn, healthy=False)
                raise
        return self._conn

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        healthy = True
        try:
            if self._tx is not None:
                if exc is None:
                    await self._tx.commit()
                else:
                    await self._tx.rollback()
        except BaseException:
            healthy = False
            raise
        finally:
            # A failed statement leaves asyncpg's connection usable; anything else (a lost
            # server, a cancellation mid-call) may not, so that connection is not reused.
            if exc is not None and not _is_statement_error(exc):
                healthy = False
            self._pool.release(conn, healthy and not conn.is_in_transaction())


def _is_statement_error(exc: BaseException) -> bool:
    if isinstance(exc, pg.PostgresConnectionError | pg.OperatorInterventionError):
        return False
    return isinstance(exc, pg.PostgresError | CloudcoreError)
