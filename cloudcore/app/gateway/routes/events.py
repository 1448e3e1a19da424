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
from cloudcore.events import POSITION_PATTERN, START, Event, deduplicated

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


class EventQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``types``: comma-separated event types; ``subject``: a subject prefix (``vm/<id>``);
    ``after``: a position (the ``next_cursor`` of the previous page, or an event's)."""

    after: Position | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    types: Types | None = None
    subject: Prefix | None = None


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


@api.get("/events", query=EventQuery, reply=EventPage, summary="List events", errors=(409,))
async def list_events(req: ApiRequest[None, EventQuery]) -> EventPage:
    """Oldest first, from ``after``; the filters apply before the limit: the page holds
    ``limit`` events that pass them, unless the log ends first or :data:`SCAN_LIMIT` events
    were read without finding as many (then fewer, and ``next_cursor`` goes on from there).
    Follow ``next_cursor`` until it is None."""
    q, bus = req.query, req.gateway.events
    types = _types(q.types)
    items: list[Event] = []
    position, scanned = q.after or START, 0
    while scanned < SCAN_LIMIT:
        batch = await bus.read(after=position, limit=_BATCH)
        for event in batch:
            position = event.position
            if _wanted(event, req.principal, types, q.subject):
                items.append(event)
                if len(items) == q.limit:
                    return EventPage(items=items, next_cursor=position)
        scanned += len(batch)
        if len(batch) < _BATCH:
            return EventPage(items=items, next_cursor=None)
    return EventPage(items=items, next_cursor=position)


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
