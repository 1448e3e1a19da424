"""``cloudcore template list|show|delete``: disk image templates through the API (a tenant's
own and the public ones). Uploads and conversions are ``PUT /templates/{id}/image`` and
``POST /templates/{id}/conversions`` (see the README's Image library)."""

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
    human_size,
    show_one,
    show_page,
)
from cloudcore.app.commands._resolve import TEMPLATE, resolve

__all__ = ["add_parser"]


def _bytes(field: str) -> Any:
    return lambda item: human_size(item.get(field)) if item.get(field) else None


_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("STATE", "state"),
    ("FORMAT", "disk_format"),
    ("OS", "os_type"),
    ("SIZE", _bytes("virtual_size")),
    ("TENANT", "tenant_id"),
]
_FIELDS: list[Column] = [
    *_COLUMNS,
    ("DATACENTER", "datacenter_id"),
    ("ON_DISK", _bytes("actual_size")),
    ("FORMATS", lambda item: ", ".join(sorted(item.get("formats") or {})) or None),
    ("CHECKSUM", "checksum"),
    ("ERROR", "error"),
    ("CREATED", "created_at"),
]


def add_parser(sub: Any) -> None:
    template = sub.add_parser("template", help="templates: list, show, delete")
    actions = template.add_subparsers(dest="template_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list templates, the newest first")
    add_output_option(listing)
    listing.add_argument("--name", help="only templates of this name")
    add_listing_options(listing)
    listing.set_defaults(handler=api_command(_list))

    for name, handler, help in (
        ("show", _show, "show a template"),
        ("delete", _delete, "delete a template"),
    ):
        parser = actions.add_parser(name, help=help)
        add_output_option(parser)
        parser.add_argument("id", metavar="TEMPLATE", help="id or name")
        parser.set_defaults(handler=api_command(handler))


async def _list(client: Client, args: argparse.Namespace) -> int:
    wanted = {
        "limit": str(args.limit),
        "name": args.name,
        "sort": args.sort,
        "cursor": args.page_token,
    }
    params = {key: value for key, value in wanted.items() if value}
    listing = await client.listing("/templates", params, all_pages=args.all_pages)
    show_page(listing, args, _COLUMNS)
    return 0


async def _template(client: Client, args: argparse.Namespace) -> str:
    return quote(await resolve(client, TEMPLATE, args.id), safe="")


async def _show(client: Client, args: argparse.Namespace) -> int:
    template = await client.call("GET", f"/templates/{await _template(client, args)}")
    show_one(template, args.output, _FIELDS, select=args.columns)
    return 0


async def _delete(client: Client, args: argparse.Namespace) -> int:
    """Nothing to show: the API answers 204."""
    await client.call("DELETE", f"/templates/{await _template(client, args)}")
    return 0
