"""A record's JSON built by PostgreSQL, in the shape msgspec gives it.

A page of records read to be answered as JSON need not become Python records first: the row's
JSON is one SQL expression (``json_build_object``), and the API passes the text through. The
expression is derived from the record's struct, so it names every field in the struct's order,
writes each default where a stored JSON value lacks the field (a spec written before the field
existed), times as msgspec writes them (RFC 3339 in UTC, ``Z``, microseconds only when there are
some) and nested structs (a JSONB column keeps no key order) field by field again. Only the
whitespace differs from msgspec's (PostgreSQL writes ``"key" : value``): the same JSON, key for
key and in the same order.
"""

from __future__ import annotations

import types
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

from cloudcore.store._table import Table

__all__ = ["record_json"]


def _bare(annotation: Any) -> tuple[Any, bool]:
    """The annotation without Annotated and None; whether None was allowed."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _time(value: str) -> str:
    """A TIMESTAMPTZ as msgspec writes a datetime (NULL stays NULL)."""
    utc = f"({value} AT TIME ZONE 'UTC')"
    return (
        f"(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
        f"extract(microseconds FROM {value})::bigint % 1000000 = 0 THEN '' "
        f"ELSE to_char({utc}, '.US') END || 'Z')"
    )


def _default(field: msgspec.structs.FieldInfo) -> str | None:
    """The JSON of a field's default, as a jsonb literal (None: the field is required)."""
    if field.required:
        return None
    value = field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
    text = msgspec.json.encode(value).decode().replace("'", "''")
    return f"'{text}'::jsonb"


def _nested(kind: type[msgspec.Struct], source: str) -> str:
    """``kind`` built from the jsonb value ``source`` (an object), field by field."""
    parts = []
    for field in msgspec.structs.fields(kind):
        value = f"{source}->'{field.encode_name}'"
        default = _default(field)
        if default is not None:
            value = f"coalesce({value}, {default})"
        parts.append(f"'{field.encode_name}', {_nested_value(field.type, value)}")
    return f"json_build_object({', '.join(parts)})"


def _nested_value(annotation: Any, value: str) -> str:
    bare, _ = _bare(annotation)
    if _is_struct(bare):
        return f"CASE WHEN jsonb_typeof({value}) = 'object' THEN {_nested(bare, value)} END"
    origin = get_origin(bare)
    if origin in (tuple, list) and get_args(bare) and _is_struct(_bare(get_args(bare)[0])[0]):
        item = _bare(get_args(bare)[0])[0]
        return (
            f"(SELECT coalesce(json_agg({_nested(item, 'e.v')} ORDER BY e.n), '[]'::json) "
            f"FROM jsonb_array_elements({value}) WITH ORDINALITY AS e(v, n))"
        )
    return value


def _column(table: Table[Any], field: msgspec.structs.FieldInfo) -> str:
    column = field.name
    bare, _ = _bare(field.type)
    if column in table.json:
        return _nested_value(field.type, column) if _is_struct(bare) else column
    if bare is datetime:
        return _time(column)
    return column


@lru_cache(maxsize=64)
def record_json(table: Table[Any]) -> str:
    """The SQL expression (json) of a row of ``table`` as its record's JSON."""
    parts = [
        f"'{field.encode_name}', {_column(table, field)}"
        for field in msgspec.structs.fields(table.kind)
    ]
    # json_build_object takes at most 100 arguments: no record comes near it.
    return f"json_build_object({', '.join(parts)})"
