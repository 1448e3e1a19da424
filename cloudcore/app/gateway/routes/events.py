"""Events: a page of the retained history, and a live Server-Sent Events stream.

The stream sends each event once (a copy the bus delivers again is skipped by its id) as
``id: <position>``, ``event: <type>``, ``data: <the event as
JSON>``. A client that reconnects with ``Last-Event-ID`` (browsers' EventSource do it by
themselves) gets every event after that position, without gap or duplicate, as long as it is
still retained; an expired position is a 409 ``position_expired`` before the stream starts.
A user sees its own tenant's events only.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import msgspec
from aiohttp import web

from cloudcore.app.gateway.api import Api, ApiRequest
from cloudcore.app.gateway.auth import Principal
from cloudcore.errors import BusClosed
from cloudcore.events import (
    POSITION_PATTERN,
    START,
    Event,
    EventBus,
    deduplicated,
    normalize_position,
)

__all__ = ["api"]

api = Api("events")

#: Seconds between two keep-alive comments on an idle stream (proxies close silent ones).
KEEPALIVE = 15.0

Position = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=40,
        pattern=POSITION_PATTERN,
        description="An event's position (or the next_cursor of a page): <ms>-<seq> as an "
        "event's id, a Redis stream id, or 0 for the start",
    ),
]
Types = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=r"^[A-Za-z0-9._,-]+$")]
Prefix = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


EventSort = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(position|time)(:(asc|desc))?$",
        description="position or time (the same order: an event's position is when it was "
        "recorded), :asc or :desc; default the newest first",
    ),
]


class EventQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``types``: comma-separated event types; ``subject``: a subject prefix (``vm/<id>``);
    ``after`` and ``before``: only events after (before) this position; ``cursor``: the
    ``next_cursor`` of the previous page, to go on in the page's order; ``sort``: the newest
    first unless ``position:asc``."""

    after: Position | None = None
    before: Position | None = None
    cursor: Position | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    types: Types | None = None
    subject: Prefix | None = None
    sort: EventSort | None = None


class StreamQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """As for the list; without ``after`` (or Last-Event-ID) the stream starts now."""

    after: Position | None = None
    types: Types | None = None
    subject: Prefix | None = None


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    """``next_cursor``: the position to continue ``after`` (None: nothing more yet)."""

    items: list[Event]
    next_cursor: str | None = None


def _types(raw: str | None) -> frozenset[str] | None:
    return None if raw is None else frozenset(t for t in raw.split(",") if t)


def _wanted(
    event: Event, principal: Principal, types: frozenset[str] | None, prefix: str | None
) -> bool:
    if types is not None and event.type not in types:
        return False
    if prefix is not None and not event.subject.startswith(prefix):
        return False
    return principal.sees_all or event.tenant == principal.tenant_id


#: Events one listing request reads at most looking for ``limit`` that pass its filters.
SCAN_LIMIT = 20_000
_BATCH = 1000


class _Scan:
    """The history read one way between the query's bounds, a batch at a time."""

    def __init__(self, bus: EventBus, q: EventQuery) -> None:
        self.bus = bus
        self.newest_first = q.sort is None or q.sort.endswith(":desc")
        self.ended = False
        after = None if q.after is None else normalize_position(q.after)
        before = None if q.before is None else normalize_position(q.before)
        if self.newest_first:
            self.position, self.stop = q.cursor or before, after
        else:
            self.position, self.stop = q.cursor or after, before
        if q.cursor is not None:
            self.position = normalize_position(q.cursor)

    async def batch(self) -> list[Event]:
        """The next batch, cut at the far bound (an empty list: the end)."""
        if self.newest_first:
            found = await self.bus.read_back(before=self.position, limit=_BATCH)
            inside = [e for e in found if self.stop is None or e.position > self.stop]
        else:
            found = await self.bus.read(after=self.position or START, limit=_BATCH)
            inside = [e for e in found if self.stop is None or e.position < self.stop]
        self.ended = len(inside) < len(found) or len(found) < _BATCH
        return inside


@api.get("/events", query=EventQuery, reply=EventPage, summary="List events", errors=(409,))
async def list_events(req: ApiRequest[None, EventQuery]) -> EventPage:
    """The newest first (``sort=position:asc``: the oldest first); the filters apply before
    the limit: the page holds ``limit`` events that pass them, unless the history ends first or
    :data:`SCAN_LIMIT` events were read without finding as many (then fewer, and
    ``next_cursor`` goes on from there). Follow ``next_cursor`` (as ``cursor``) until it is
    None. Reading the oldest first from a position no longer retained is a 409."""
    q = req.query
    types = _types(q.types)
    scan = _Scan(req.gateway.events, q)
    items: list[Event] = []
    scanned = 0
    while scanned < SCAN_LIMIT:
        batch = await scan.batch()
        for event in batch:
            scan.position = event.position
            if _wanted(event, req.principal, types, q.subject):
                items.append(event)
                if len(items) == q.limit:
                    return EventPage(items=items, next_cursor=scan.position)
        scanned += len(batch)
        if scan.ended:
            return EventPage(items=items, next_cursor=None)
    return EventPage(items=items, next_cursor=scan.position)


@api.get(
    "/events/stream",
    query=StreamQuery,
    reply=str,
    content_type="text/event-stream",
    summary="Follow events live (Server-Sent Events)",
    errors=(409,),
)
async def stream_events(req: ApiRequest[None, StreamQuery]) -> web.StreamResponse:
    """Resumes after the ``Last-Event-ID`` header if given (it wins over ``after``)."""
    q, bus = req.query, req.gateway.events
    after = req.raw.headers.get("Last-Event-ID") or q.after
    if after is not None:
        await bus.read(after=after, limit=1)  # a malformed or expired position fails here, as JSON
    principal = req.principal
    subscription = bus.subscribe(
        after=after,
        types=_types(q.types),
        subject_prefix=q.subject,
        tenant=principal.scope(),
    )
    events = deduplicated(subscription)  # at least once on the bus, once on the stream
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(req.raw)
    await response.write(b": stream open\n\n")
    keepalive = asyncio.create_task(_keep_alive(response))
    try:
        async for event in events:
            await response.write(_frame(event))
    except ConnectionResetError:
        pass  # the client went away
    except BusClosed:
        pass  # the node is shutting down: end the stream; the client reconnects elsewhere
    finally:
        keepalive.cancel()
        with contextlib.suppress(BaseException):
            await keepalive
        for iterator in (events, subscription):
            aclose: Any = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
    return response


_encoder = msgspec.json.Encoder()


def _frame(event: Event) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event.position.encode(),
        event.type.encode(),
        _encoder.encode(event),
    )


async def _keep_alive(response: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionResetError):
        while True:
            await asyncio.sleep(KEEPALIVE)
            await response.write(b": keep-alive\n\n")
