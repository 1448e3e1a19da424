"""Walk a store listing page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TypeVar

from cloudcore.store import Store
from cloudcore.store.records import Record

__all__ = ["all_records"]

R = TypeVar("R", bound=Record)


async def all_records(
    store: Store, kind: type[R], where: Mapping[str, object] | None = None
) -> AsyncIterator[R]:
    """Every record of ``kind`` matching ``where``, in id order, a page of 1,000 at a time."""
    after: str | None = None
    while True:
        page = await store.list(kind, where=where, after=after, limit=1000)
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        after = page.next_cursor
