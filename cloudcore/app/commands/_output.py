"""Showing what the API answered: a table (the default), JSON or YAML, through rich.

JSON and YAML are the API's reply as it came (raw numbers, every field) so scripts see all of
it; a table shows the few columns a person scans for, sizes in binary units (``8 GiB``). On a
terminal a table fits its width (long cells cut with an ellipsis) and headers are coloured;
piped, it is plain text with nothing cut, so ``grep`` and ``awk`` see whole values. Columns name
a field by a dotted path into the reply (``spec.cpus``) or compute a cell from the item;
``-c/--column`` picks some of them, by header or by field, in every format.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import yaml

if TYPE_CHECKING:  # rich is imported when a table is drawn: `cloudcore serve` never pays for it
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "FORMATS",
    "Column",
    "add_listing_options",
    "add_output_option",
    "cell",
    "console",
    "gib",
    "human_size",
    "mib",
    "show_list",
    "show_one",
    "show_page",
]

FORMATS = ("table", "json", "yaml")

#: A column: its header, and the dotted path of its field or a function of the item.
Column = tuple[str, str | Callable[[dict[str, Any]], Any]]

#: Width of a table that is not on a terminal: nothing is cut.
_PIPE_WIDTH = 10_000
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def console(out: TextIO | None = None) -> Console:
    """A rich console on ``out`` (stdout): colour and the terminal's width on a terminal
    (``NO_COLOR`` respected), plain and unbounded when piped."""
    from rich.console import Console

    out = out or sys.stdout
    tty = out.isatty()
    return Console(
        file=out,
        force_terminal=tty,
        no_color=not tty or "NO_COLOR" in os.environ,
        width=None if tty else _PIPE_WIDTH,
        highlight=False,
        soft_wrap=False,
    )


def human_size(n: float | None) -> str | None:
    """Bytes in binary units: ``512 MiB``, ``1.5 GiB``; None stays None."""
    if n is None:
        return None
    size = float(n)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    raise AssertionError("unreachable")


class Size:
    """A cell showing a numeric field (``path``, counted in ``unit`` bytes) as a size; JSON and
    YAML with ``-c`` keep the number, under its path."""

    def __init__(self, path: str, unit: int) -> None:
        self.path = path
        self.unit = unit

    def __call__(self, item: dict[str, Any]) -> str | None:
        value = _field(item, self.path)
        return human_size(value * self.unit) if isinstance(value, int | float) else None


def mib(path: str) -> Size:
    """A cell showing a MiB field (``spec.memory_mib``) as a size."""
    return Size(path, 1024**2)


def gib(path: str) -> Size:
    """A cell showing a GiB field as a size."""
    return Size(path, 1024**3)


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=FORMATS, default="table", help="table (default), json or yaml"
    )
    parser.add_argument(
        "-c",
        "--column",
        action="append",
        dest="columns",
        metavar="COLUMN",
        help="show only this column (by header or field; repeatable)",
    )


def add_listing_options(
    parser: argparse.ArgumentParser,
    *,
    sort: bool = True,
    default_sort: str = "created_at:desc",
) -> None:
    """``--limit``, ``--all``, ``--page-token`` and (``sort``) ``--sort``."""
    parser.add_argument("--limit", type=int, default=100, help="per page (default 100)")
    parser.add_argument(
        "--all", "--all-pages", action="store_true", dest="all_pages", help="every page"
    )
    parser.add_argument("--page-token", metavar="TOKEN", help="the page after this one's end")
    if sort:
        parser.add_argument(
            "--sort",
            metavar="FIELD[:asc|desc]",
            help=f"order by this field (default: {default_sort}, the newest first)",
        )


def _path(field: str | Callable[[dict[str, Any]], Any]) -> str | None:
    """The dotted path a column shows, if it shows one field."""
    return field if isinstance(field, str) else getattr(field, "path", None)


def _select(
    columns: Sequence[Column], wanted: Sequence[str] | None, items: Sequence[dict[str, Any]]
) -> list[Column]:
    """The columns ``-c`` names, in the order named: by header, by the field a column shows,
    or by the dotted path of any field the records have. Another is refused, naming all."""
    if not wanted:
        return list(columns)
    by_name = {header.lower(): (header, f) for header, f in columns}
    by_name |= {p.lower(): (h, f) for h, f in columns if (p := _path(f)) is not None}
    chosen: list[Column] = []
    for name in wanted:
        found = by_name.get(name.lower())
        if found is None and any(_field(item, name) is not None for item in items):
            found = (name.upper(), name)
        if found is None:
            from cloudcore.app.commands._api import CliError

            known = ", ".join(header for header, _ in columns)
            raise CliError(f"no column {name!r}; columns: {known}, or a field's dotted path")
        chosen.append(found)
    return chosen


def _picked(item: dict[str, Any], columns: Sequence[Column]) -> dict[str, Any]:
    """For JSON and YAML with ``-c``: the chosen fields' raw values, by path (or header)."""
    picked: dict[str, Any] = {}
    for header, f in columns:
        path = _path(f)
        picked[path or header.lower()] = f(item) if path is None else _field(item, path)  # type: ignore[operator]
    return picked


def show_list(
    items: Sequence[dict[str, Any]],
    output: str,
    columns: Sequence[Column],
    raw: Any = None,
    out: TextIO | None = None,
    select: Sequence[str] | None = None,
) -> None:
    """A listing: one row per item; JSON/YAML print ``raw`` (default: the items) or, with
    ``select``, the chosen fields of each item."""
    chosen = _select(columns, select, items)
    if output != "table":
        value = [_picked(i, chosen) for i in items] if select else (items if raw is None else raw)
        _dump(value, output, out or sys.stdout)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), header_style="bold")
    for header, _ in chosen:
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for item in items:
        table.add_row(*(Text(cell(item, field)) for _, field in chosen))
    _print(table, out)


def show_page(
    listing: dict[str, Any],
    args: argparse.Namespace,
    columns: Sequence[Column],
    out: TextIO | None = None,
) -> None:
    """A listing from :meth:`~cloudcore.app.client.Client.listing`, then, on a table with more
    pages, how many there are and how to get them (on stderr, so stdout stays the table)."""
    show_list(listing["items"], args.output, columns, listing, out, getattr(args, "columns", None))
    if args.output != "table" or not listing.get("next_cursor"):
        return
    shown, total = len(listing["items"]), listing.get("total")
    of = f" of {total:,}" if isinstance(total, int) else ""
    sys.stderr.write(f"-- {shown:,}{of}; --all or --page-token {listing['next_cursor']} for more\n")


def show_one(
    item: dict[str, Any],
    output: str,
    fields: Sequence[Column],
    out: TextIO | None = None,
    select: Sequence[str] | None = None,
) -> None:
    """One record: a field per line, names aligned."""
    chosen = _select(fields, select, [item])
    if output != "table":
        _dump(_picked(item, chosen) if select else item, output, out or sys.stdout)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for header, field in chosen:
        table.add_row(f"{header}:", Text(cell(item, field)))
    _print(table, out)


def _print(table: Table, out: TextIO | None) -> None:
    """The table without the padding rich leaves at the ends of lines."""
    shown = console(out)
    with shown.capture() as captured:
        shown.print(table)
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    shown.file.write(text + "\n")


def _field(item: dict[str, Any], path: str) -> Any:
    value: Any = item
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def cell(item: dict[str, Any], field: str | Callable[[dict[str, Any]], Any]) -> str:
    value = field(item) if callable(field) else _field(item, field)
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _dump(value: Any, output: str, out: TextIO) -> None:
    if output == "json":
        out.write(json.dumps(value, indent=2) + "\n")
    else:
        out.write(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
