"""How a listing is asked for beyond equality: a value excluded (:class:`Not`) and an order
(:class:`Order`), and the SQL and cursors of a sorted page.

A page is read by keyset, never by offset: ``(field, id)`` after (or, descending, before) the
last row of the previous page, so rows written between two pages neither repeat nor vanish from
the part of the listing not read yet. ``id`` breaks ties, so the order is total. Only columns
that are never NULL and compare as text or time may be sorted on (NULLs sort differently in the
two dialects, and a JSON column has no order); :meth:`sortable` names them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

__all__ = [
    "Not",
    "Order",
    "count_sql",
    "decode_sorted_cursor",
    "encode_sorted_cursor",
    "is_time",
    "sortable",
    "sql",
]

#: Between the value and the id in a sorted listing's cursor (no id or name holds it).
_SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class Not:
    """A ``where`` value that matches every row whose column is not ``value`` (nor NULL)."""

    value: object


@dataclass(frozen=True, slots=True)
class Order:
    """Sort by ``field`` (a column :func:`sortable` allows), then by id, the same direction."""

    field: str = "id"
    descending: bool = False


def sortable(types: dict[str, Any], json: frozenset[str]) -> frozenset[str]:
    """The columns of a table (``types``: column -> annotation) a listing may sort on."""
    return frozenset(c for c, t in types.items() if c not in json and _orderable(t))


def _bare(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def is_time(annotation: Any) -> bool:
    """Whether a column of this annotation holds a time (its cursor value is parsed back)."""
    return _bare(annotation) is datetime


def _orderable(annotation: Any) -> bool:
    annotation = _bare(annotation)
    if get_origin(annotation) in (UnionType, Union):
        return False  # may be NULL
    return annotation is datetime or (isinstance(annotation, type) and issubclass(annotation, str))


def encode_sorted_cursor(value: Any, last_id: str) -> str:
    """The cursor after the row whose sort value is ``value`` and id ``last_id``."""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return base64.urlsafe_b64encode(f"{text}{_SEP}{last_id}".encode()).decode().rstrip("=")


def decode_sorted_cursor(position: str, order: Order, is_time: bool) -> tuple[Any, str]:
    """(value, id) from the position a cursor decodes to. Total, as id-order cursors are: a
    cursor of another listing (no separator) starts at that value, and one whose value is no
    time, for a time column, starts at the beginning of the listing."""
    value, _, last_id = position.partition(_SEP)
    if not is_time:
        return value, last_id
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = datetime.max if order.descending else datetime.min
        return when.replace(tzinfo=UTC), ""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), last_id


def _conditions(filters: tuple[tuple[str, str], ...]) -> tuple[list[str], int]:
    clauses: list[str] = []
    n = 0
    for column, how in filters:
        if how == "null":
            clauses.append(f"{column} IS NULL")
        else:
            n += 1
            clauses.append(f"{column} {how} ${n}")
    return clauses, n


@lru_cache(maxsize=512)
def sql(select: str, filters: tuple[tuple[str, str], ...], order: Order, cursor: bool) -> str:
    """A page: ``filters`` are (column, how) with how ``=``, ``<>`` or ``null``, each ``=`` and
    ``<>`` taking the next parameter; then the cursor (one parameter, the id, in id order; two,
    the value then the id, otherwise); then the limit."""
    clauses, n = _conditions(filters)
    cmp = "<" if order.descending else ">"
    if cursor and order.field == "id":
        n += 1
        clauses.append(f"id {cmp} ${n}")
    elif cursor:
        n += 2
        clauses.append(f"({order.field}, id) {cmp} (${n - 1}, ${n})")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    way = " DESC" if order.descending else ""
    keys = "id" if order.field == "id" else f"{order.field}{way}, id"
    return f"{select}{where} ORDER BY {keys}{way} LIMIT ${n + 1}"


@lru_cache(maxsize=512)
def count_sql(table: str, filters: tuple[tuple[str, str], ...]) -> str:
    """How many rows the same filters match (their parameters as for :func:`sql`)."""
    clauses, _ = _conditions(filters)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return f"SELECT count(*) AS n FROM {table}{where}"
