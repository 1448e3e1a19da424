"""Listing what a tenant owns together with what is shared (tenant_id null): templates,
networks. Two store listings merged in the listing's order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from cloudcore.store import Store, encode_cursor
from cloudcore.store.listing import Order, encode_sorted_cursor
from cloudcore.store.records import Page, Record

__all__ = ["own_and_public"]

R = TypeVar("R", bound=Record)


async def own_and_public(
    store: Store,
    kind: type[R],
    tenant_id: str,
    cursor: str | None,
    limit: int,
    *,
    where: Mapping[str, object] | None = None,
    order: Order | None = None,
) -> Page[R]:
    """Two listings (``where`` besides the tenant) merged in ``order`` (default: id order).
    Both resume after the last record shown, so the cursor is the store's own (ids are
    unique across both); ``total`` is both totals."""
    order = order or Order()
    pages = [
        await store.list(
            kind,
            where={**(where or {}), "tenant_id": owner},
            after=cursor,
            limit=limit,
            order=order,
            count=True,
        )
        for owner in (tenant_id, None)
    ]

    def key(record: R) -> tuple[Any, str]:
        return getattr(record, order.field), record.id

    both = sorted((r for p in pages for r in p.items), key=key, reverse=order.descending)
    merged = both[:limit]
    more = len(both) > limit or any(p.next_cursor is not None for p in pages)
    total = sum(p.total or 0 for p in pages)
    if not more:
        return Page(items=merged, total=total)
    last = merged[-1]
    after = (
        encode_cursor(last.id)
        if order.field == "id"
        else encode_sorted_cursor(getattr(last, order.field), last.id)
    )
    return Page(items=merged, next_cursor=after, total=total)
