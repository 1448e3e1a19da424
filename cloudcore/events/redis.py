"""The Redis event bus (production): one Redis Stream, trimmed to a retention bound.

Publishing queues the event and one flusher task sends everything queued in the meantime as one
pipeline of ``XADD ... MAXLEN ~ retention``, so concurrent publishers share round trips.
Positions are the stream ids, rewritten in a fixed-width form that compares as strings.
Subscribers ``XREAD BLOCK`` from their last position; consumer groups use ``XREADGROUP`` and
``XACK``. While Redis is down, publish and read raise BackendUnavailable; subscriptions wait and
resume from their position once it is back. Entries that do not decode are logged as
``event.skipped`` and skipped (and acknowledged, in a group).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cloudcore.errors import BackendUnavailable, BusClosed, CloudcoreError, PositionExpired
from cloudcore.events._lua import APPEND, RANGE, split_range
from cloudcore.events._wire import (
    Corrupt,
    decode_event,
    encode_event,
    from_stream_id,
    normalize_position,
    to_stream_id,
)
from cloudcore.events.base import START, Event, EventBus, EventFilter
from cloudcore.logging import get_logger
from cloudcore.store.records import new_id

__all__ = ["RedisEventBus"]

_log = get_logger("cloudcore.events.redis")

_FIELD = b"e"
_MAX_BATCH = 2000
_BLOCK_MS = 1000
_Entry = tuple[bytes, bytes | None]  # stream id, payload


def _failure(exc: RedisError, url: str) -> CloudcoreError:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return BackendUnavailable(f"Redis at {url} is unavailable: {exc}")
    return CloudcoreError(f"Redis at {url} refused the call: {exc}")


class RedisEventBus(EventBus):
    """An :class:`EventBus` on a Redis Stream. Make one with :meth:`connect`."""

    def __init__(self, client: aioredis.Redis, url: str, stream: str, retention: int) -> None:
        self._redis = client
        self._url = url
        self._key = stream
        self._retention = retention
        self._queue: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._append = client.register_script(APPEND)
        self._range = client.register_script(RANGE)

    @classmethod
    async def connect(cls, url: str, *, stream: str, retention: int = 100_000) -> RedisEventBus:
        """Connect to Redis at ``url``; raises BackendUnavailable if it does not answer."""
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=_BLOCK_MS / 1000 + 5,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        )
        where = url.split("@")[-1]  # never log a password
        try:
            await client.ping()
        except RedisError as exc:
            await client.aclose()
            raise _failure(exc, where) from exc
        _log.info("events.opened", backend="redis", url=where, stream=stream)
        return cls(client, where, stream, retention)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- publishing -------------------------------------------------------------------------

    async def publish(
        self,
        type: str,
        subject: str,
        *,
        tenant: str | None = None,
        data: Mapping[str, Any] | None = None,
        id: str | None = None,
        time: datetime | None = None,
    ) -> Event:
        self._check_open()
        time = time or datetime.now(UTC)
        id = id or new_id("evt-")
        payload = encode_event(type, subject, tenant, time, data, id)
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._queue.append((payload, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        stream_id = await done
        return Event(
            type=type,
            subject=subject,
            tenant=tenant,
            time=time,
            position=from_stream_id(stream_id),
            data=dict(data or {}),
            id=id,
        )

    async def _flush(self) -> None:
        # Everything queued while the previous pipeline was in flight goes in the next one.
        try:
            while self._queue:
                batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
                try:
                    reply: Any = await self._append(
                        keys=[self._key], args=[self._retention, *(p for p, _ in batch)]
                    )
                    ids = reply.split()
                except RedisError as exc:
                    _log.warning("events.publish_failed", error=str(exc), events=len(batch))
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(_failure(exc, self._url))
                    continue
                for (_, done), stream_id in zip(batch, ids, strict=True):
                    if not done.done():
                        done.set_result(stream_id)
        finally:
            self._flusher = None

    # -- reading ----------------------------------------------------------------------------

    async def _check_retained(self, after: str) -> None:
        if after == START:
            return
        try:
            info: Any = await self._redis.xinfo_stream(self._key)
        except ResponseError:
            return  # no stream yet: nothing was ever dropped
        # The stream is only ever trimmed from its head, so events after ``after`` were dropped
        # if some were dropped and ``after`` is older than the oldest one kept. (At the exact
        # boundary, ``after`` being the last dropped event, this errs on the safe side.)
        dropped = int(info.get("entries-added", 0)) > int(info.get("length", 0))
        first = info.get("first-entry")
        if dropped and (first is None or from_stream_id(first[0]) > after):
            raise PositionExpired(
                f"events after {after} were dropped (retention {self._retention}); "
                "resynchronise and subscribe from the latest position"
            )

    def _decode(self, entries: list[_Entry]) -> list[Event]:
        events: list[Event] = []
        for stream_id, payload in entries:
            at = from_stream_id(stream_id)
            try:
                events.append(decode_event(payload, at))
            except Corrupt as exc:
                _log.warning("event.skipped", stream=self._key, position=at, reason=str(exc))
        return events

    async def _fetch(self, after: str, limit: int) -> list[_Entry]:
        start = "-" if after == START else f"({to_stream_id(after)}"
        reply: Any = await self._range(keys=[self._key], args=[start, limit])
        return split_range(reply)

    async def read(self, *, after: str = START, limit: int = 1000) -> list[Event]:
        after = normalize_position(after)
        try:
            await self._check_retained(after)
            entries = await self._fetch(after, limit)
        except RedisError as exc:
            raise _failure(exc, self._url) from exc
        return self._decode(entries)

    async def read_back(self, *, before: str | None = None, limit: int = 1000) -> list[Event]:
        end = "+" if before is None else f"({to_stream_id(normalize_position(before))}"
        if end == "(0-0":
            return []  # nothing is before the start (and Redis refuses the interval)
        try:
            entries: Any = await self._redis.xrevrange(self._key, max=end, min="-", count=limit)
        except RedisError as exc:
            raise _failure(exc, self._url) from exc
        return self._decode([(stream_id, fields.get(_FIELD)) for stream_id, fields in entries])

    async def last_position(self) -> str:
        try:
            entries: Any = await self._redis.xrevrange(self._key, count=1)
        except RedisError as exc:
            raise _failure(exc, self._url) from exc
        return from_stream_id(entries[0][0]) if entries else START

    async def subscribe(
        self,
        *,
        after: str | None = None,
        types: Collection[str] | None = None,
        subject_prefix: str | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[Event]:
        self._check_open()
        wanted = EventFilter.of(types, subject_prefix, tenant)
        cursor = normalize_position(await self.last_position() if after is None else after)
        check, pause = True, _Backoff()
        while not self._closed:
            try:
                if check:
                    await self._check_retained(cursor)
                entries = await self._fetch(cursor, 1000)
                if not entries:  # nothing new: wait for an entry, then fetch it as above
                    await self._redis.xread(
                        {self._key: to_stream_id(cursor)}, count=1, block=_BLOCK_MS
                    )
            except RedisError as exc:
                _honour_cancellation()
                if self.closed:
                    break
                await pause.wait(exc)
                check = True  # Redis may have lost or trimmed the stream meanwhile
                continue
            _honour_cancellation()
            pause.reset()
            check = len(entries) == 1000  # a full batch: this subscriber may be falling behind
            if entries:
                cursor = from_stream_id(entries[-1][0])
            for event in self._decode(entries):
                if wanted.matches(event):
                    yield event
        await self._disconnect_after_close()
        raise BusClosed("the event bus is closed")

    async def consume(
        self, group: str, consumer: str, *, after: str | None = None
    ) -> AsyncIterator[Event]:
        self._check_open()
        after = None if after is None else normalize_position(after)
        start = "$" if after is None else "0" if after == START else to_stream_id(after)
        cursor: str | None = "0"  # first this consumer's pending entries, then new ones (None)
        made, pause = False, _Backoff()
        while not self._closed:
            try:
                if not made:
                    await self._create_group(group, start)
                    made = True
                reply: Any = await self._redis.xreadgroup(
                    group,
                    consumer,
                    {self._key: cursor or ">"},
                    count=100,
                    block=None if cursor else _BLOCK_MS,
                )
            except RedisError as exc:
                _honour_cancellation()
                if self.closed:
                    break
                made = made and "NOGROUP" not in str(exc)
                await pause.wait(exc)
                continue
            _honour_cancellation()
            pause.reset()
            entries: list[_Entry] = [
                (sid, (fields or {}).get(_FIELD)) for sid, fields in (reply[0][1] if reply else [])
            ]
            if cursor is not None:
                if not entries:
                    cursor = None
                    continue
                cursor = entries[-1][0].decode()
            for event in await self._decode_acking_skipped(group, entries):
                yield event
        await self._disconnect_after_close()
        raise BusClosed("the event bus is closed")

    async def _decode_acking_skipped(self, group: str, entries: list[_Entry]) -> list[Event]:
        """The events of ``entries``; the ones that cannot be decoded (logged) are acknowledged,
        so they do not come back to the group."""
        events = self._decode(entries)
        if len(events) < len(entries):
            good = {e.position for e in events}
            bad = [sid for sid, _ in entries if from_stream_id(sid) not in good]
            await self._redis.xack(self._key, group, *bad)
        return events

    async def _disconnect_after_close(self) -> None:
        # A reader that was waiting when the bus closed may have reconnected (redis-py retries)
        # or given its connection back to the pool after close emptied it: close those too.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.connection_pool.disconnect()

    async def _create_group(self, group: str, start: str) -> None:
        try:
            await self._redis.xgroup_create(self._key, group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def ack(self, group: str, *positions: str) -> None:
        if not positions:
            return
        try:
            await self._redis.xack(self._key, group, *(to_stream_id(p) for p in positions))
        except RedisError as exc:
            raise _failure(exc, self._url) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed(f"the event bus on Redis at {self._url} is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._redis.aclose()


def _honour_cancellation() -> None:
    # redis-py (8.1) can swallow a cancellation that arrives while it opens a connection; the
    # task is still marked as cancelling, so end the loop here instead of reading forever.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Backoff:
    """Waits between attempts to reach Redis again: 0.05 s doubling to 2 s."""

    def __init__(self) -> None:
        self._delay = 0.05

    async def wait(self, exc: RedisError) -> None:
        _log.warning("events.reconnecting", error=str(exc), retry_in=self._delay)
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, 2.0)

    def reset(self) -> None:
        self._delay = 0.05
