"""A page of a listing as the API answers it: sorted as the query asks (``sort``, default the
newest first), counted (``total``), filtered before the limit by the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from cloudcore.app.gateway.schemas import ListQuery
from cloudcore.store import Store
from cloudcore.store.listing import Order
from cloudcore.store.records import Page, Record

__all__ = ["NEWEST_FIRST", "order_of", "sorted_page"]

R = TypeVar("R", bound=Record)

NEWEST_FIRST = Order("created_at", descending=True)


def order_of(sort: str | None, default: Order = NEWEST_FIRST) -> Order:
    """``FIELD[:asc|desc]`` (the query's ``sort``, its form checked at the edge) as an order;
    a field alone sorts ascending."""
    if sort is None:
        return default
    field, _, way = sort.partition(":")
    return Order(field, descending=way == "desc")


async def sorted_page(
    store: Store, kind: type[R], where: Mapping[str, object], query: ListQuery
) -> Page[R]:
    """One page, counted, in the order of the query's ``sort`` (its fields checked at the
    edge: see :func:`~cloudcore.app.gateway.schemas.sort_of`)."""
    return await store.list(
        kind,
        where=where,
        after=query.cursor,
        limit=query.limit,
        order=order_of(getattr(query, "sort", None)),
        count=True,
    )
