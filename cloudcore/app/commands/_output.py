"""Showing what the API answered: an aligned table (the default), JSON or YAML.

JSON and YAML are the API's reply as it came, so scripts see every field; a table shows the few
columns a person scans for. Columns name a field by a dotted path into the reply (``spec.cpus``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml

__all__ = ["FORMATS", "Column", "add_output_option", "show_list", "show_one"]

FORMATS = ("table", "json", "yaml")

#: A column: its header, and the dotted path of its field or a function of the item.
Column = tuple[str, str | Callable[[dict[str, Any]], Any]]


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=FORMATS, default="table", help="table (default), json or yaml"
    )


def show_list(
    items: Sequence[dict[str, Any]],
    output: str,
    columns: Sequence[Column],
    raw: Any = None,
    out: TextIO | None = None,
) -> None:
    """A listing: one row per item; JSON/YAML print ``raw`` (default: the items)."""
    out = out or sys.stdout
    if output != "table":
        _dump(items if raw is None else raw, output, out)
        return
    rows = [[header for header, _ in columns]]
    rows += [[cell(item, field) for _, field in columns] for item in items]
    _table(rows, out)


def show_one(
    item: dict[str, Any], output: str, fields: Sequence[Column], out: TextIO | None = None
) -> None:
    """One record: a field per line, names aligned."""
    out = out or sys.stdout
    if output != "table":
        _dump(item, output, out)
        return
    _table([[f"{header}:", cell(item, field)] for header, field in fields], out)


def cell(item: dict[str, Any], field: str | Callable[[dict[str, Any]], Any]) -> str:
    value: Any = item
    if callable(field):
        value = field(item)
    else:
        for key in field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _dump(value: Any, output: str, out: TextIO) -> None:
    if output == "json":
        out.write(json.dumps(value, indent=2) + "\n")
    else:
        out.write(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
