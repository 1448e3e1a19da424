"""``cloudcore datacenter list|show|create``: datacenters through the API (every role reads
them; an admin registers one, which the node starts running at once)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cloudcore.app.client import Client
from cloudcore.app.commands._api import api_command
from cloudcore.app.commands._output import (
    Column,
    add_listing_options,
    add_output_option,
    show_one,
    show_page,
)
from cloudcore.app.commands._resolve import DATACENTER, resolve

__all__ = ["add_parser"]

_COLUMNS: list[Column] = [("ID", "id"), ("NAME", "name"), ("LOCATION", "location")]
_FIELDS: list[Column] = [*_COLUMNS, ("CREATED", "created_at"), ("UPDATED", "updated_at")]


def add_parser(sub: Any) -> None:
    dc = sub.add_parser("datacenter", help="datacenters: list, show, create")
    actions = dc.add_subparsers(dest="dc_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list datacenters, the newest first")
    add_output_option(listing)
    listing.add_argument("--name", help="only datacenters of this name")
    add_listing_options(listing)
    listing.set_defaults(handler=api_command(_list))

    show = actions.add_parser("show", help="show a datacenter")
    add_output_option(show)
    show.add_argument("id", metavar="DATACENTER", help="id or name")
    show.set_defaults(handler=api_command(_show))

    create = actions.add_parser("create", help="register a datacenter (admins)")
    add_output_option(create)
    create.add_argument("id", help="its id (letters, digits, . _ : -)")
    create.add_argument("--name", help="its name (default: the id)")
    create.add_argument("--location", default="", help="where it is")
    create.set_defaults(handler=api_command(_create))


async def _list(client: Client, args: argparse.Namespace) -> int:
    wanted = {
        "limit": str(args.limit),
        "name": args.name,
        "sort": args.sort,
        "cursor": args.page_token,
    }
    params = {key: value for key, value in wanted.items() if value}
    listing = await client.listing("/datacenters", params, all_pages=args.all_pages)
    show_page(listing, args, _COLUMNS)
    return 0


async def _show(client: Client, args: argparse.Namespace) -> int:
    dc_id = quote(await resolve(client, DATACENTER, args.id), safe="")
    show_one(
        await client.call("GET", f"/datacenters/{dc_id}"), args.output, _FIELDS, None, args.columns
    )
    return 0


async def _create(client: Client, args: argparse.Namespace) -> int:
    body = {"id": args.id, "name": args.name or args.id, "location": args.location}
    dc = await client.call("POST", "/datacenters", body=body)
    show_one(dc, args.output, _FIELDS, select=args.columns)
    return 0
