"""The outbox relay: publishes the events the store wrote with their changes, at least once.

Every write that causes events stores them in the same transaction, in the store's outbox
(:meth:`cloudcore.store.Store.write_events` and the ``events=`` of the store's writes). The
relay reads the outbox in the order written, publishes each event with its own id and time, and
removes what was published. While the bus is down it retries with a growing pause (0.05 s to
2 s), so nothing is lost to an outage; after a crash the rows not yet removed are published at
the next start. An event published but not yet removed when the process dies is published
again: consumers de-duplicate by id (:mod:`cloudcore.events.dedup`).

Order: rows are published in ``seq`` order, a batch at a time, and a batch is retried from its
first failure, so events of one subject (written one after the other) reach the bus in order.
This relies on the bus sending publishes queued together in one round trip, all or none (the
Redis bus: one script per batch; the relay is the node's only publisher).

Waking: the store calls :meth:`OutboxRelay.nudge` after each commit that wrote events, so an
event leaves within a loop turn; a slow poll (``poll`` seconds) picks up rows written by other
processes sharing the database. One relay per store object; several nodes on one PostgreSQL
each relay, which duplicates (harmlessly, by id) but keeps order per subject.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

from cloudcore.errors import BusClosed, InvalidRecord
from cloudcore.events.base import EventBus
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, Message
from cloudcore.store.base import Store
from cloudcore.store.records import OutboxEvent

__all__ = ["OutboxRelay", "OutboxRelayActor", "RelayNow"]

_log = get_logger("cloudcore.events.relay")

_FIRST_PAUSE = 0.05
_MAX_PAUSE = 2.0


class OutboxRelay:
    """Relays ``store``'s outbox to ``bus``. ``async with`` it, or :meth:`start` and
    :meth:`stop`; it runs as a task of its own that survives every error but a closed bus."""

    def __init__(self, store: Store, bus: EventBus, *, batch: int = 500, poll: float = 5.0) -> None:
        self._store = store
        self._bus = bus
        self._batch = batch
        self._poll = poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unwatch: list[Callable[[], None]] = []
        #: Events published so far (copies sent again after a failure included).
        self.published = 0

    def nudge(self) -> None:
        """Look at the outbox now (called by the store after a commit that wrote events)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            unwatch = self._store.watch_outbox(self.nudge)
            self._unwatch.append(unwatch)
            self._task = asyncio.create_task(self._run(), name="outbox.relay")

    async def stop(self, drain: float = 2.0) -> None:
        """Stop, after publishing what the outbox holds if that takes less than ``drain``
        seconds (what is left is published at the next start)."""
        task, self._task = self._task, None
        if task is None:
            return
        for unwatch in self._unwatch:
            unwatch()
        self._unwatch.clear()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(drain):
                while await self.relay_once() == self._batch:
                    pass

    async def __aenter__(self) -> OutboxRelay:
        self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def relay_once(self) -> int:
        """Publish one batch from the head of the outbox and remove what was published; the
        number of rows read. Raises what publishing raised (after removing the rows before the
        failure), or the store's error."""
        rows = await self._store.read_outbox(self._batch)
        if not rows:
            return 0
        # Queued in order in one call, so a batching bus sends them in one round trip, in order.
        results = await asyncio.gather(
            *(self._publish(row) for row in rows), return_exceptions=True
        )
        done: list[int] = []
        failure: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, InvalidRecord):  # this event can never be published
                _log.error("event.dropped", id=row.id, type=row.type, error=str(result))
            elif isinstance(result, BaseException):
                failure = result
                break
            else:
                self.published += 1
            done.append(row.seq)
        await self._store.remove_from_outbox(done)
        if failure is not None:
            raise failure
        return len(rows)

    async def _publish(self, row: OutboxEvent) -> None:
        await self._bus.publish(
            row.type, row.subject, tenant=row.tenant_id, data=row.data, id=row.id, time=row.time
        )

    async def _run(self) -> None:
        pause = _FIRST_PAUSE
        while True:
            self._wake.clear()  # before reading: a commit from now on wakes the next turn
            try:
                relayed = await self.relay_once()
            except BusClosed:
                _log.info("outbox.relay_stopped", reason="the event bus is closed")
                return
            except Exception as exc:  # the bus or the store is down: wait, then again
                _log.warning("outbox.relay_failed", error=str(exc), retry_in=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE)
                continue
            pause = _FIRST_PAUSE
            if relayed == self._batch:
                continue  # a full batch: more are waiting
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()


class RelayNow(Message, frozen=True, kw_only=True):
    """Look at the outbox now (an operator's nudge; the store nudges by itself)."""


class OutboxRelayActor(Actor[RelayNow]):
    """An :class:`OutboxRelay` as an actor of the node's tree, so it starts and stops with the
    actor system: ``system.spawn(OutboxRelayActor, store, bus, name="outbox-relay")``."""

    def __init__(self, store: Store, bus: EventBus, poll: float = 5.0) -> None:
        self.relay = OutboxRelay(store, bus, poll=poll)

    async def started(self) -> None:
        self.relay.start()

    async def stopping(self) -> None:
        await self.relay.stop()

    async def before_restart(self, error: Exception) -> None:
        await self.relay.stop()

    async def receive(self, message: RelayNow) -> None:
        self.relay.nudge()
