"""Positions and the wire form of events, shared by the bus implementations."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from cloudcore.errors import InvalidRecord
from cloudcore.events.base import START, Event

__all__ = [
    "POSITION_PATTERN",
    "WIRE_VERSION",
    "Corrupt",
    "check_position",
    "decode_event",
    "encode_event",
    "from_stream_id",
    "normalize_position",
    "position",
    "to_stream_id",
]

WIRE_VERSION = 2  # 2 added the event's id; entries of version 1 read with id ""
_KNOWN = (1, 2)
#: Every position the buses read: ``<ms>-<seq>`` (a Redis stream id, or this package's
#: zero-padded form) or ``<ms>`` alone (``0`` is START). The gateway's schema uses it as is.
POSITION_PATTERN = r"^[0-9]+(-[0-9]+)?$"
_POSITION = re.compile(r"^([0-9]+)(?:-([0-9]+))?$")
_MAX_MS, _MAX_SEQ = 10**16 - 1, 10**10 - 1


class Corrupt(Exception):
    """An entry on the stream is not an event this code understands.

    Not a CloudcoreError on purpose: it never leaves the bus, which logs the entry and skips it
    (see ``RedisEventBus._decode``), so no caller of the bus can meet it."""


class _Wire(msgspec.Struct, array_like=True, frozen=True):
    v: int
    type: str
    subject: str
    tenant: str | None
    time: datetime
    data: dict[str, Any]
    id: str = ""


def position(ms: int, seq: int) -> str:
    """The position of the ``seq``-th event of millisecond ``ms``: fixed width, so string order
    is publication order."""
    return f"{ms:016d}-{seq:010d}"


def check_position(value: str) -> tuple[int, int]:
    """(ms, seq) of a position; START (and any spelling of zero) is (0, 0). Total over
    :data:`POSITION_PATTERN`: a position past any this code writes (a 17-digit millisecond, an
    11-digit sequence) reads as the last one it could write, which nothing comes after.
    InvalidRecord outside the pattern."""
    match = _POSITION.match(value)
    if match is None:
        raise InvalidRecord(f"event position {value!r} is malformed")
    ms, seq = int(match[1]), int(match[2] or 0)
    if ms > _MAX_MS:
        return _MAX_MS, _MAX_SEQ
    return ms, min(seq, _MAX_SEQ)


def normalize_position(value: str) -> str:
    """The canonical form of a position (START, or ``position(ms, seq)``), whose string order
    is publication order. InvalidRecord as :func:`check_position`."""
    ms, seq = check_position(value)
    return START if (ms, seq) == (0, 0) else position(ms, seq)


def to_stream_id(value: str) -> str:
    ms, seq = check_position(value)
    return f"{ms}-{seq}"


def from_stream_id(stream_id: bytes | str) -> str:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return position(int(ms), int(seq or 0))


def encode_event(
    type: str,
    subject: str,
    tenant: str | None,
    time: datetime,
    data: Mapping[str, Any] | None,
    id: str = "",
) -> bytes:
    """The stored form of an event. InvalidRecord if it lacks a type or subject, or if ``data``
    cannot be encoded."""
    if not type or not subject:
        raise InvalidRecord("an event needs a type and a subject")
    try:
        return msgspec.msgpack.encode(
            _Wire(WIRE_VERSION, type, subject, tenant, time, dict(data or {}), id)
        )
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidRecord(f"event data cannot be encoded: {exc}") from None


def decode_event(payload: bytes | None, at: str) -> Event:
    """The event stored at position ``at``; Corrupt if it is not one."""
    if payload is None:
        raise Corrupt("the entry has no event field")
    try:
        wire = msgspec.msgpack.decode(payload, type=_Wire)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Corrupt(f"undecodable: {exc}") from None
    if wire.v not in _KNOWN:
        raise Corrupt(f"unknown event format version {wire.v}")
    return Event(
        type=wire.type,
        subject=wire.subject,
        tenant=wire.tenant,
        time=wire.time,
        position=at,
        data=wire.data,
        id=wire.id,
    )
