"""``cloudcore events [--follow]``: what happened, from the API's event log.

Without ``--follow`` it lists the events recorded (``GET /events``), the newest first unless
``--sort position:asc``; with it, it prints events as
they come (``GET /events/stream``, Server-Sent Events), reopening a dropped stream from the last
event it printed (``Last-Event-ID``) so none is lost or shown twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from cloudcore.app.client import ApiFailure, Client
from cloudcore.app.commands._api import api_command
from cloudcore.app.commands._output import (
    Column,
    add_listing_options,
    add_output_option,
    show_list,
    show_page,
)

__all__ = ["add_parser"]

_DATA_WIDTH = 100


def _whole(event: dict[str, Any]) -> str:
    """The event's data on one line (a table on a terminal cuts it to the width)."""
    return json.dumps(event.get("data") or {}, separators=(",", ":"), sort_keys=True)


def _data(event: dict[str, Any]) -> str:
    """The event's data cut to a fixed width, for the columns of ``--follow``."""
    text = _whole(event)
    return text if len(text) <= _DATA_WIDTH else text[: _DATA_WIDTH - 3] + "..."


_COLUMNS: list[Column] = [
    ("POSITION", "position"),
    ("TIME", "time"),
    ("TYPE", "type"),
    ("SUBJECT", "subject"),
    ("DATA", _whole),
]

_RECONNECT_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0)


def add_parser(sub: Any) -> None:
    events = sub.add_parser("events", help="list events, or follow them as they happen")
    add_output_option(events)
    events.add_argument("-f", "--follow", action="store_true", help="print events as they come")
    events.add_argument(
        "--type", action="append", dest="types", metavar="T", help="only this type (repeatable)"
    )
    events.add_argument("--subject", metavar="PREFIX", help="only subjects starting with this")
    events.add_argument(
        "--after", metavar="POSITION", help="only events after this position (follow: from it)"
    )
    events.add_argument("--before", metavar="POSITION", help="only events before this position")
    add_listing_options(events, default_sort="position:desc")
    events.set_defaults(handler=api_command(_events))


def _params(args: argparse.Namespace) -> dict[str, str]:
    params: dict[str, str] = {}
    if args.types:
        params["types"] = ",".join(args.types)
    if args.subject:
        params["subject"] = args.subject
    if args.after:
        params["after"] = args.after
    return params


async def _events(client: Client, args: argparse.Namespace) -> int:
    if args.follow:
        return await _follow(client, args)
    params = _params(args)
    for key, value in (
        ("limit", str(args.limit)),
        ("before", args.before),
        ("sort", args.sort),
        ("cursor", args.page_token),
    ):
        if value:
            params[key] = value
    listing = await client.listing("/events", params, all_pages=args.all_pages)
    show_page(listing, args, _COLUMNS)
    return 0


async def _follow(client: Client, args: argparse.Namespace) -> int:
    """Until Ctrl-C. Once connected, a stream that drops (the node restarting) is reopened
    for as long as it takes; a node never reached, or an error reply, ends the command."""
    last_id: str | None = None
    connected = False
    failures = 0
    header = args.output == "table"
    while True:
        try:
            async with client.stream("/events/stream", _params(args), last_id) as stream:
                connected, failures = True, 0
                async for event in stream:
                    last_id = event.id or last_id
                    _print(event.json(), args.output, header)
                    header = False
        except ApiFailure as exc:
            if exc.status is not None or not connected:
                raise
            failures += 1
        delay = _RECONNECT_DELAYS[min(failures, len(_RECONNECT_DELAYS) - 1)]
        if failures <= 1:
            print("cloudcore: the event stream dropped; reconnecting", file=sys.stderr)
        await asyncio.sleep(delay)


def _print(event: Any, output: str, header: bool) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    elif output == "yaml":
        show_list([event], "yaml", _COLUMNS, [event])
    else:
        # No alignment across a stream that never ends: fixed columns, one event per line.
        if header:
            print(f"{'POSITION':<20}  {'TYPE':<20}  {'SUBJECT':<44}  DATA")
        cells = [str(event.get(key, "")) for key in ("position", "type", "subject")]
        print(f"{cells[0]:<20}  {cells[1]:<20}  {cells[2]:<44}  {_data(event)}")
    sys.stdout.flush()
