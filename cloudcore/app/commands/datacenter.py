"""``cloudcore datacenter list|show|create|balance``: datacenters through the API (every role
reads them; an admin registers one, which the node starts running at once; an admin or operator
sets its balancing policy, or sees the plan a policy would make now)."""

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

_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("LOCATION", "location"),
    ("BALANCE", "balance_policy"),
]
_POLICIES = ("off", "spread", "consolidate")
_FIELDS: list[Column] = [*_COLUMNS, ("CREATED", "created_at"), ("UPDATED", "updated_at")]
_MOVES: list[Column] = [
    ("VM", "vm_id"),
    ("FROM", "source"),
    ("TO", "target"),
    ("MIB", "memory_mib"),
    ("WHY", "reason"),
]
_PLAN: list[Column] = [
    ("POLICY", "policy"),
    ("HOSTS", "hosts"),
    ("VMS", "vms"),
    ("SPREAD BEFORE", "spread_before"),
    ("SPREAD AFTER", "spread_after"),
    ("STANDBY", "standby"),
    ("EXPLANATION", "explanation"),
]


def add_parser(sub: Any) -> None:
    dc = sub.add_parser("datacenter", help="datacenters: list, show, create, balance")
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

    balance = actions.add_parser(
        "balance",
        help="set the balancing policy (off, spread, consolidate), or show the plan it makes",
    )
    add_output_option(balance)
    balance.add_argument("id", metavar="DATACENTER", help="id or name")
    balance.add_argument(
        "policy", nargs="?", choices=_POLICIES, help="the policy its balancer applies from now"
    )
    balance.add_argument(
        "--plan",
        choices=_POLICIES,
        help="show the migrations this policy would make now, with their reasons (moves nothing)",
    )
    balance.set_defaults(handler=api_command(_balance))


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


async def _balance(client: Client, args: argparse.Namespace) -> int:
    if (args.policy is None) == (args.plan is None):
        raise SystemExit("cloudcore datacenter balance: give a POLICY to set, or --plan POLICY")
    dc_id = quote(await resolve(client, DATACENTER, args.id), safe="")
    if args.policy is not None:
        body = {"policy": args.policy}
        dc = await client.call("PUT", f"/datacenters/{dc_id}/balance/policy", body=body)
        show_one(dc, args.output, _FIELDS, select=args.columns)
        return 0
    made = await client.call("GET", f"/datacenters/{dc_id}/balance", params={"policy": args.plan})
    if args.output != "table":
        show_one(made, args.output, _PLAN)  # the whole plan as JSON or YAML
        return 0
    show_page({"items": made["moves"], "total": len(made["moves"])}, args, _MOVES)
    show_one(made, args.output, _PLAN)
    return 0
