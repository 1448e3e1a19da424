"""Listing what a tenant owns together with what is shared (tenant_id null): templates,
networks. Two store listings merged in id order."""

from __future__ import annotations

from typing import TypeVar

from cloudcore.store import Store, encode_cursor
from cloudcore.store.records import Page, Record

__all__ = ["own_and_public"]

R = TypeVar("R", bound=Record)


async def own_and_public(
    store: Store, kind: type[R], tenant_id: str, cursor: str | None, limit: int
) -> Page[R]:
    """Two listings merged in id order. Both resume after the last id shown, so the cursor is
    the store's own (ids are unique across both)."""
    pages = [
        await store.list(kind, where={"tenant_id": owner}, after=cursor, limit=limit)
        for owner in (tenant_id, None)
    ]
    both = sorted((r for p in pages for r in p.items), key=lambda r: r.id)
    merged = both[:limit]
    more = len(both) > limit or any(p.next_cursor is not None for p in pages)
    return Page(items=merged, next_cursor=encode_cursor(merged[-1].id) if more else None)
