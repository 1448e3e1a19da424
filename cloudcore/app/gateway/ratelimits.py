"""Rate limits that hold across API processes and nodes: requests per token, and failed
authentications per client address, counted in Redis with the ``limits`` library — or in the
process, for a node on its own (no Redis configured).

Each limit is ``limits``' sliding window counter: at most ``burst`` in any window of
``burst / rate`` seconds (rounded to whole seconds, at least one), so ``rate`` a second on
average and ``burst`` at once. Every gateway sharing one Redis and one key prefix shares each
token's budget: two API processes do not give a token twice its rate.

Redis unreachable: **degraded, neither open nor closed**. Each process counts in its own memory
until Redis answers again (checked every :data:`RETRY_SECONDS`), and logs
``api.limits_degraded`` once, then ``api.limits_restored``. Closed would turn an outage of a
counter into an outage of the API for every well-behaved client (Redis is not where requests
are served from); open would lift the failed-authentication throttle while Redis is down. In
memory, each process still holds every limit by itself, so N processes allow at most N times
a budget for the length of the outage. A Redis call that stalls gives up after
:data:`REDIS_TIMEOUT` seconds and counts as unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from cloudcore.logging import get_logger

__all__ = ["REDIS_TIMEOUT", "RETRY_SECONDS", "Counters", "RateLimiter"]

T = TypeVar("T")

#: Seconds a Redis call may take before the counters fall back to memory.
REDIS_TIMEOUT = 0.5
#: Seconds between two attempts at Redis while it is unreachable.
RETRY_SECONDS = 5.0

_log = get_logger("cloudcore.app.gateway.ratelimits")


class Counters:
    """Where limits are counted: Redis at ``redis_url`` under ``prefix`` (shared by every
    process using both), or this process's memory (``redis_url`` None). Close with
    :meth:`close`."""

    def __init__(self, redis_url: str | None = None, prefix: str = "cloudcore:limits") -> None:
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._redis: SlidingWindowCounterRateLimiter | None = None
        self._pool: ConnectionPool | None = None
        if redis_url is not None:
            self._pool = ConnectionPool.from_url(
                redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
            )
            storage = RedisStorage(
                "async+" + redis_url.removeprefix("async+"),
                implementation="redispy",
                key_prefix=prefix,
                wrap_exceptions=True,
                # Our pool, so that close() can end its connections (limits' option types
                # are narrower than what its redis-py bridge takes).
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self._redis = SlidingWindowCounterRateLimiter(storage)
        self._down_until = 0.0
        self._was_down = False

    @property
    def shared(self) -> bool:
        """True if the counts are in Redis (whether or not it answers now)."""
        return self._redis is not None

    @property
    def degraded(self) -> bool:
        """True while Redis is configured but unreachable (counting in memory)."""
        return self._redis is not None and self._down_until > time.monotonic()

    async def run(self, op: Callable[[SlidingWindowCounterRateLimiter], Awaitable[T]]) -> T:
        """``op`` on Redis, or on memory when there is none or it is unreachable."""
        if self._redis is None or self.degraded:
            return await op(self._memory)
        try:
            result = await op(self._redis)
        except (StorageError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + RETRY_SECONDS
            if not self._was_down:
                _log.warning("api.limits_degraded", reason=_reason(exc), retry_s=RETRY_SECONDS)
            self._was_down = True
            return await op(self._memory)
        if self._was_down:
            _log.info("api.limits_restored")
            self._was_down = False
        return result

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()


def _reason(exc: BaseException) -> str:
    inner = exc.storage_error if isinstance(exc, StorageError) else exc
    return f"{type(inner).__name__}: {inner}"


class RateLimiter:
    """``rate`` a second on average and ``burst`` at once for each key, counted in
    ``counters`` under ``name`` (one name per kind of limit)."""

    def __init__(
        self, rate: float, burst: int, counters: Counters | None = None, name: str = "requests"
    ) -> None:
        window = max(1, round(burst / rate))
        self._item: RateLimitItem = RateLimitItemPerSecond(burst, window, namespace=name)
        self._rate = rate
        self._counters = counters if counters is not None else Counters()

    async def wait_time(self, key: str, *, count: bool = True) -> float:
        """0 if one more may go now (and it is counted, unless ``count`` is false), else the
        seconds until one may."""
        item = self._item

        async def check(limiter: SlidingWindowCounterRateLimiter) -> float:
            allowed = await (limiter.hit(item, key) if count else limiter.test(item, key))
            if allowed:
                return 0.0
            stats = await limiter.get_window_stats(item, key)
            wait = stats.reset_time - time.time()
            return wait if wait > 0 else 1.0 / self._rate

        return await self._counters.run(check)

    async def refund(self, key: str) -> None:
        """Give back one counted for ``key`` (it turned out not to count)."""
        item = self._item

        async def give_back(limiter: SlidingWindowCounterRateLimiter) -> bool:
            # A negative cost takes one off the current window's count (the sliding window's
            # Lua script and its memory twin both add the cost as given).
            return await limiter.hit(item, key, cost=-1)

        await self._counters.run(give_back)
