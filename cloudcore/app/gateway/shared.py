"""Listing what a tenant owns together with what is shared (tenant_id null): templates,
networks. Two store listings merged in id order, under one opaque cursor."""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

import msgspec

from cloudcore.errors import InvalidRecord
from cloudcore.store import Store
from cloudcore.store.records import Page, Record

__all__ = ["own_and_public"]

R = TypeVar("R", bound=Record)

_DONE = "-"  # a source the cursor has read to its end


async def own_and_public(
    store: Store, kind: type[R], tenant_id: str, cursor: str | None, limit: int
) -> Page[R]:
    """Two listings merged in id order. The cursor holds the store's cursor of each."""
    sources: list[dict[str, object]] = [{"tenant_id": tenant_id}, {"tenant_id": None}]
    positions = _decode_cursor(cursor)
    pages = [
        await store.list(kind, where=where, after=pos or None, limit=limit)
        if pos != _DONE
        else Page[R](items=[])
        for where, pos in zip(sources, positions, strict=True)
    ]
    merged = sorted((t for p in pages for t in p.items), key=lambda t: t.id)[:limit]
    taken = {t.id for t in merged}
    after: list[str] = []
    for where, pos, page in zip(sources, positions, pages, strict=True):
        used = sum(1 for t in page.items if t.id in taken)
        if pos == _DONE or used == len(page.items):
            after.append(_DONE if pos == _DONE or page.next_cursor is None else page.next_cursor)
        elif used == 0:
            after.append(pos)
        else:  # the cursor just past the last one shown: the page of only those
            again = await store.list(kind, where=where, after=pos or None, limit=used)
            after.append(again.next_cursor or _DONE)
    done = all(a == _DONE for a in after)
    return Page(items=merged, next_cursor=None if done else _encode_cursor(after))


def _encode_cursor(positions: list[str]) -> str:
    raw = msgspec.json.encode(positions)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> list[str]:
    if cursor is None:
        return ["", ""]
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        positions = msgspec.json.decode(raw, type=list[str])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        positions = []
    if len(positions) != 2:
        raise InvalidRecord(f"cursor {cursor!r} is malformed")
    return positions
