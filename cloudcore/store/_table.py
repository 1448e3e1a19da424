"""How a kind of record maps to its table: columns, codec, validation and the SQL to reach it.

SQL is written with ``$n`` placeholders (the SQLite backend rewrites them to ``?n``). Column names
come from the record structs and the filter whitelists here, never from callers: callers' values
always travel as parameters.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from types import UnionType
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

import msgspec

from cloudcore.errors import InvalidRecord
from cloudcore.store import listing
from cloudcore.store._conn import Conn
from cloudcore.store.listing import Order
from cloudcore.store.records import (
    CURSOR_PATTERN,
    VM,
    ApiToken,
    Datacenter,
    Host,
    Network,
    Record,
    Task,
    Template,
    Tenant,
    User,
    Volume,
    VolumeSnapshot,
)

__all__ = ["Table", "decode_cursor", "encode_cursor", "table_of", "validate"]

R = TypeVar("R", bound=msgspec.Struct)

#: Set by the store only; an update may not name them.
_MANAGED = frozenset({"id", "version", "created_at", "updated_at"})


def _describe(exc: msgspec.ValidationError, prefix: str = "") -> str:
    text = str(exc).replace("`$.", f"`{prefix}")
    return text.replace("`$`", f"`{prefix.rstrip('.')}`" if prefix else "the record")


def validate(record: R) -> R:
    """``record`` checked against its field constraints (structs do not check on construction)."""
    try:
        return msgspec.convert(msgspec.to_builtins(record, builtin_types=(datetime,)), type(record))
    except msgspec.ValidationError as exc:
        raise InvalidRecord(f"invalid {type(record).__name__}: {_describe(exc)}") from None


class Table(Generic[R]):
    """The table of one record type, with its codec and cached statements."""

    def __init__(
        self,
        kind: type[R],
        name: str,
        *,
        json: frozenset[str] = frozenset(),
        filters: tuple[str, ...] = (),
        managed: frozenset[str] = frozenset(),
        refs: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        self.kind = kind
        #: (column, table, label) of each reference to another record: to name the field
        #: when the database refuses a row for a record that does not exist.
        self.refs = refs
        self.name = name
        self.label = kind.__name__
        fields = msgspec.structs.fields(kind)
        self.columns = tuple(f.name for f in fields)
        self.types = {f.name: f.type for f in fields}
        self.json = json
        self.bools = frozenset(f.name for f in fields if f.type is bool)
        self.filters = frozenset(filters)
        self.sortable = listing.sortable(self.types, json)
        self.managed = _MANAGED | managed
        cols = ", ".join(self.columns)
        marks = ", ".join(f"${i}" for i in range(1, len(self.columns) + 1))
        self.select = f"SELECT {cols} FROM {name}"
        self.insert_sql = f"INSERT INTO {name} ({cols}) VALUES ({marks})"
        self.get_sql = f"{self.select} WHERE id = $1"

    def encode(self, record: R) -> list[Any]:
        """Parameter values of ``record`` in column order."""
        raw = msgspec.to_builtins(record, builtin_types=(datetime,))
        return [self.encode_value(c, raw[c]) for c in self.columns]

    def encode_value(self, column: str, value: Any) -> Any:
        if column in self.json:
            return msgspec.json.encode(value).decode()
        return value

    def decode(self, row: Mapping[str, Any]) -> R:
        """A record from a row. A row that does not decode is reported, not returned half-made."""
        raw = dict(row)
        try:
            for c in self.json:
                raw[c] = msgspec.json.decode(raw[c])
            for c in self.bools:
                raw[c] = bool(raw[c])
            return msgspec.convert(raw, self.kind)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidRecord(
                f"stored {self.label} {raw.get('id')!r} is malformed: {exc}"
            ) from exc

    async def missing_reference(self, conn: Conn, record: R) -> InvalidRecord | None:
        """The error naming the field of ``record`` that refers to a record that does not
        exist, or None: the database's own refusal does not say which (SQLite's says only
        "FOREIGN KEY constraint failed")."""
        for column, table, label in self.refs:
            value = getattr(record, column)
            if value is None:
                continue
            if await conn.fetchrow(f"SELECT id FROM {table} WHERE id = $1", value) is None:
                return InvalidRecord(f"{column}: no {label} {value!r}")
        return None

    def encode_changes(self, changes: Mapping[str, Any]) -> tuple[tuple[str, ...], list[Any]]:
        """Validate ``changes`` field by field; return the sorted columns and their values."""
        if not changes:
            raise InvalidRecord(f"an update of {self.label} names no field")
        columns = tuple(sorted(changes))
        values: list[Any] = []
        for c in columns:
            if c not in self.types:
                raise InvalidRecord(f"{self.label} has no field {c!r}")
            raw = msgspec.to_builtins(changes[c], builtin_types=(datetime,))
            try:  # a malformed value is named first, even for a field update may not change
                msgspec.convert(raw, self.types[c])
            except msgspec.ValidationError as exc:
                raise InvalidRecord(
                    f"invalid {self.label}.{c}: {_describe(exc, c + '.')}"
                ) from None
            if c in self.managed:
                raise InvalidRecord(
                    f"{self.label}.{c} is changed only by the store's own calls, not by update"
                )
            values.append(self.encode_value(c, raw))
        return columns, values

    def update_sql(self, columns: tuple[str, ...]) -> str:
        """CAS update: ``$1`` id, ``$2`` expected version, ``$3`` updated_at, then ``columns``."""
        return _update_sql(self.name, self.columns, columns)

    def batch_update_sql(self, columns: tuple[str, ...]) -> str:
        """PostgreSQL CAS update of many rows: ``$1`` updated_at, then arrays of ids, expected
        versions and each of ``columns``; returns the rows that matched."""
        return _batch_update_sql(self.name, self.columns, columns, self.pg_types(columns))

    def pg_types(self, columns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple("jsonb" if c in self.json else _pg_type(self.types[c]) for c in columns)

    def list_sql(self, filters: tuple[tuple[str, str], ...], order: Order, cursor: bool) -> str:
        """A page (see :func:`cloudcore.store.listing.sql`)."""
        return listing.sql(self.select, filters, order, cursor)

    def count_sql(self, filters: tuple[tuple[str, str], ...]) -> str:
        return listing.count_sql(self.name, filters)

    def check_order(self, order: Order) -> None:
        if order.field != "id" and order.field not in self.sortable:
            allowed = ", ".join(sorted(self.sortable | {"id"}))
            raise InvalidRecord(
                f"{self.label} cannot be sorted by {order.field!r} (sort: {allowed})"
            )

    def check_filters(self, where: Mapping[str, object]) -> None:
        for column in where:
            if column not in self.filters:
                allowed = ", ".join(sorted(self.filters)) or "none"
                raise InvalidRecord(
                    f"{self.label} cannot be listed by {column!r} (filters: {allowed})"
                )


@lru_cache(maxsize=512)
def _update_sql(table: str, all_columns: tuple[str, ...], columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=4))
    return (
        f"UPDATE {table} SET {sets}, version = version + 1, updated_at = $3 "
        f"WHERE id = $1 AND version = $2 RETURNING {', '.join(all_columns)}"
    )


@lru_cache(maxsize=512)
def _batch_update_sql(
    table: str, all_columns: tuple[str, ...], columns: tuple[str, ...], types: tuple[str, ...]
) -> str:
    sets = ", ".join(f"{c} = v.{c}" for c in columns)
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, start=4))
    returning = ", ".join(f"t.{c}" for c in all_columns)
    return (
        f"UPDATE {table} AS t SET {sets}, version = t.version + 1, updated_at = $1 "
        f"FROM unnest($2::text[], $3::bigint[], {arrays}) AS v(id, expected, {', '.join(columns)}) "
        f"WHERE t.id = v.id AND t.version = v.expected RETURNING {returning}"
    )


def _pg_type(annotation: Any) -> str:
    while get_origin(annotation) in (Annotated, UnionType, Union):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "bigint"
    if annotation is datetime:
        return "timestamptz"
    return "text"


def encode_cursor(last_id: str) -> str:
    """An opaque cursor that resumes a listing after ``last_id``: its UTF-8 in unpadded base64url
    (the alphabet ``[A-Za-z0-9_-]``, which :data:`CURSOR_PATTERN` describes)."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


_CURSOR = re.compile(CURSOR_PATTERN)


def decode_cursor(cursor: str) -> str:
    """The position (a point in id order) a cursor resumes after.

    Total over :data:`CURSOR_PATTERN`, so a client cannot be refused a cursor the API document
    allows: a cursor is a point in id order, and every string of the alphabet names one. A final
    character that carries less than a byte is ignored, bytes that are not UTF-8 read with the
    replacement character, and NULs (no id holds one; PostgreSQL's text cannot) are dropped; the
    empty position is before every id. InvalidRecord only outside the alphabet."""
    if _CURSOR.match(cursor) is None:
        raise InvalidRecord(f"cursor {cursor!r} is malformed: base64url characters only")
    usable = cursor[: len(cursor) - (len(cursor) % 4 == 1)]
    raw = base64.urlsafe_b64decode(usable + "=" * (-len(usable) % 4))
    return raw.decode("utf-8", errors="replace").replace("\x00", "")


_TENANT = ("tenant_id", "tenants", "tenant")
_DATACENTER = ("datacenter_id", "datacenters", "datacenter")

_TABLES: dict[type[Any], Table[Any]] = {
    t.kind: t
    for t in (
        Table(Tenant, "tenants", filters=("name",)),
        Table(User, "users", filters=("tenant_id", "name"), refs=(_TENANT,)),
        Table(
            ApiToken,
            "api_tokens",
            filters=("tenant_id", "user_id", "token_hash"),
            refs=(_TENANT, ("user_id", "users", "user")),
        ),
        Table(Datacenter, "datacenters", filters=("name",)),
        Table(
            Host,
            "hosts",
            json=frozenset({"capabilities"}),
            filters=("datacenter_id", "health", "admin_state", "power_state", "name"),
            managed=frozenset({"cpus_used", "memory_mib_used"}),
            refs=(_DATACENTER,),
        ),
        Table(
            VM,
            "vms",
            json=frozenset({"spec"}),
            filters=("tenant_id", "datacenter_id", "host_id", "state", "name"),
            managed=frozenset({"spec"}),  # the claim on its host: Store.resize_vm
            refs=(_TENANT, _DATACENTER, ("host_id", "hosts", "host")),
        ),
        Table(
            Volume,
            "volumes",
            filters=("tenant_id", "datacenter_id", "vm_id", "state", "pool_id", "name"),
            refs=(_TENANT, _DATACENTER),
        ),
        Table(
            VolumeSnapshot,
            "volume_snapshots",
            filters=("tenant_id", "volume_id", "state"),
            refs=(_TENANT, ("volume_id", "volumes", "volume")),
        ),
        Table(
            Network,
            "networks",
            json=frozenset({"dns", "ranges", "excluded", "extra"}),
            filters=("tenant_id", "datacenter_id", "name"),
            refs=(_TENANT, _DATACENTER),
        ),
        Table(
            Template,
            "templates",
            json=frozenset({"formats"}),
            filters=("tenant_id", "datacenter_id", "checksum", "state", "name"),
            refs=(_TENANT, _DATACENTER),
        ),
        Table(
            Task,
            "tasks",
            json=frozenset({"data"}),
            filters=("tenant_id", "subject", "state"),
            managed=frozenset({"step_count"}),
        ),
    )
}


def table_of(kind: type[R]) -> Table[R]:
    """The table of a record type with an id; InvalidRecord for any other type."""
    table = _TABLES.get(kind)
    if table is None or not issubclass(kind, Record):
        raise InvalidRecord(f"{kind.__name__} is not a kind of record the store keeps by id")
    return table
