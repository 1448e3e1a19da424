"""The event bus interface: publish, subscribe, replay from a position.

Every change the orchestrator makes is announced as an :class:`Event` (``vm.started`` about
``vm/<id>``). Each event gets a *position* when it is published: an opaque string, equal-length,
that compares (as a string) in publication order. A client that remembers the last position it
saw and subscribes again with ``after=`` that position misses nothing and sees nothing twice, as
long as the position is still within the retained history; if it is not, the bus raises
:class:`~cloudcore.errors.PositionExpired` rather than silently skip events.

Two ways to read:

- :meth:`EventBus.subscribe`: every subscriber sees every event (fan-out), e.g. an SSE client.
- :meth:`EventBus.consume` with a group name: each event goes to one consumer of the group, stays
  pending until :meth:`EventBus.ack`, and is delivered again to the same consumer after a
  restart if it was not acknowledged (at-least-once work sharing, e.g. one reconciler per node).

Every event has an ``id``, unique, made when it is written (to the store's outbox, see
:mod:`cloudcore.events.relay`): an event is published at least once, so the same id may come
twice and consumers skip what they have seen (:func:`cloudcore.events.dedup.deduplicated`).
A closed bus refuses to publish and to open readers (:class:`~cloudcore.errors.BusClosed`),
and the iterators still open end.

Implementations: in-process (:mod:`cloudcore.events.local`, embedded) and Redis Streams
(:mod:`cloudcore.events.redis`, production). Undecodable entries (someone wrote garbage to the
stream) are logged as ``event.skipped`` and skipped, never fatal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import datetime
from typing import Any

import msgspec

__all__ = ["START", "Event", "EventBus", "EventFilter"]

#: ``after=START`` replays the whole retained history.
START = "0"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened. ``position`` is set by the bus when it is published; ``id`` is
    the event's own (the same on every copy of an event published more than once)."""

    type: str
    subject: str
    tenant: str | None = None
    time: datetime
    position: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    id: str = ""


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which events a subscriber wants; an empty filter takes all."""

    types: frozenset[str] | None = None
    subject_prefix: str | None = None
    tenant: str | None = None

    @classmethod
    def of(
        cls, types: Collection[str] | None, subject_prefix: str | None, tenant: str | None
    ) -> EventFilter:
        return cls(
            types=None if types is None else frozenset(types),
            subject_prefix=subject_prefix,
            tenant=tenant,
        )

    def matches(self, event: Event) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        if self.subject_prefix is not None and not event.subject.startswith(self.subject_prefix):
            return False
        return self.tenant is None or event.tenant == self.tenant


class EventBus(ABC):
    """Publish and read events. Methods are safe to call concurrently from one event loop."""

    @abstractmethod
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
        """Append an event; return it with its position once it is stored.

        ``id`` (default: a new one) and ``time`` (default: now) are the event's own: the relay
        passes those written in the outbox, so a copy published again keeps its id. Concurrent
        publishes are batched into one round trip, in the order called. ``data`` must be
        encodable as msgpack/JSON. Raises BackendUnavailable (retryable; the event may or may
        not have been stored), InvalidRecord (empty type or subject, data that cannot be
        encoded), BusClosed.
        """

    @abstractmethod
    async def read(self, *, after: str = START, limit: int = 1000) -> list[Event]:
        """Up to ``limit`` retained events after position ``after``, oldest first (a replay
        page; does not wait). Raises PositionExpired, BackendUnavailable.
        """

    @abstractmethod
    async def read_back(self, *, before: str | None = None, limit: int = 1000) -> list[Event]:
        """Up to ``limit`` retained events before position ``before`` (None: from the newest),
        newest first (a page of the history read backwards; does not wait). Reading back past
        the retained history simply ends. Raises BackendUnavailable.
        """

    @abstractmethod
    def subscribe(
        self,
        *,
        after: str | None = None,
        types: Collection[str] | None = None,
        subject_prefix: str | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[Event]:
        """Every event after ``after`` (None: from the moment iteration starts), then live ones,
        in order, without gap or duplicate, filtered by type, subject prefix and tenant.

        The iterator outlives a backend outage: it waits and resumes from its last position.
        It raises PositionExpired if it starts (or falls) behind the retained history, and
        BusClosed once the bus is closed (at once if it was closed already), so a consumer that
        loops on it ends instead of spinning.
        """

    @abstractmethod
    def consume(
        self, group: str, consumer: str, *, after: str | None = None
    ) -> AsyncIterator[Event]:
        """Events shared among the consumers of ``group``: each goes to one of them.

        The group is created on first use, starting after ``after`` (None: new events only).
        This consumer's unacknowledged events are delivered again first. Acknowledge each with
        :meth:`ack` once handled. Raises BusClosed once the bus is closed, like :meth:`subscribe`.
        """

    @abstractmethod
    async def ack(self, group: str, *positions: str) -> None:
        """Mark events of ``group`` as handled so they are not delivered again. Idempotent."""

    @abstractmethod
    async def last_position(self) -> str:
        """The position of the newest event (START if there is none)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop publishing (a publish after it raises BusClosed), flush what is queued, end every
        subscriber with BusClosed, release connections. Idempotent."""
