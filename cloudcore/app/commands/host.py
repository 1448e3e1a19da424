"""``cloudcore host list|show|enable|disable|maintenance [--cancel] [--wait]``: hypervisor
hosts through the API (admins and operators)."""

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
from cloudcore.app.commands._resolve import DATACENTER, HOST, resolve
from cloudcore.app.commands._tasks import accepted

__all__ = ["add_parser"]


def _usage(used: str, total: str, unit: int = 1) -> Any:
    def cell(item: dict[str, Any]) -> str:
        have, of = item.get(used) or 0, item.get(total)
        if unit == 1:
            return f"{have}/{'?' if of is None else of}"
        size = human_size(of * unit) if isinstance(of, int) else "?"
        return f"{human_size(have * unit)}/{size}"

    return cell


_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("DATACENTER", "datacenter_id"),
    ("HYPERVISOR", "hypervisor"),
    ("HEALTH", "health"),
    ("ADMIN", "admin_state"),
    ("POWER", "power_state"),
    ("CPUS", _usage("cpus_used", "cpus")),
    ("MEMORY", _usage("memory_mib_used", "memory_mib", 1024**2)),
]

_FIELDS: list[Column] = [
    *_COLUMNS,
    ("ADDRESS", "address"),
    ("OBSERVED", "observed_at"),
    ("CAPABILITIES", "capabilities"),
    ("CREATED", "created_at"),
    ("UPDATED", "updated_at"),
]

_ADMIN = {
    "enable": "let the scheduler place VMs on a host",
    "disable": "place no new VMs on a host",
}


def add_parser(sub: Any) -> None:
    host = sub.add_parser("host", help="hypervisor hosts: list, show, enable, disable")
    actions = host.add_subparsers(dest="host_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list hosts")
    add_output_option(listing)
    listing.add_argument("--datacenter", help="only hosts in this datacenter")
    listing.add_argument("--health", type=str.upper, help="only hosts this healthy (HEALTHY, ...)")
    listing.add_argument(
        "--admin-state", type=str.upper, help="ENABLED, DISABLED, MAINTENANCE, ..."
    )
    listing.add_argument("--name", help="only hosts of this name")
    add_listing_options(listing)
    listing.set_defaults(handler=api_command(_list))

    show = actions.add_parser("show", help="show a host")
    add_output_option(show)
    show.add_argument("id", metavar="HOST", help="id or name")
    show.set_defaults(handler=api_command(_show))

    for name, help in _ADMIN.items():
        parser = actions.add_parser(name, help=help, description=help)
        add_output_option(parser)
        parser.add_argument("id", metavar="HOST", help="id or name")
        parser.set_defaults(handler=api_command(_admin))

    maintenance = actions.add_parser(
        "maintenance",
        help="put a host in maintenance (drain it by migration), or cancel it",
        description="PREPARING_FOR_MAINTENANCE, then MAINTENANCE, or ERROR_IN_MAINTENANCE naming"
        " the VMs that could not move and why; --cancel: ENABLED again",
    )
    add_output_option(maintenance)
    maintenance.add_argument("id")
    maintenance.add_argument("--cancel", action="store_true", help="cancel it: ENABLED again")
    maintenance.add_argument("--wait", action="store_true", help="follow the drain until it ends")
    maintenance.set_defaults(handler=api_command(_maintenance))


async def _list(client: Client, args: argparse.Namespace) -> int:
    wanted = {
        "datacenter_id": args.datacenter and await resolve(client, DATACENTER, args.datacenter),
        "health": args.health,
        "admin_state": args.admin_state,
        "name": args.name,
        "sort": args.sort,
        "cursor": args.page_token,
        "limit": str(args.limit),
    }
    params = {key: value for key, value in wanted.items() if value}
    show_page(await client.listing("/hosts", params, all_pages=args.all_pages), args, _COLUMNS)
    return 0


async def _host(client: Client, args: argparse.Namespace) -> str:
    return quote(await resolve(client, HOST, args.id), safe="")


async def _show(client: Client, args: argparse.Namespace) -> int:
    host = await client.call("GET", f"/hosts/{await _host(client, args)}")
    show_one(host, args.output, _FIELDS, select=args.columns)
    return 0


async def _maintenance(client: Client, args: argparse.Namespace) -> int:
    path = f"/hosts/{quote(args.id, safe='')}/maintenance"
    if args.cancel:
        show_one(await client.call("POST", f"{path}/cancel"), args.output, _FIELDS)
        return 0
    return await accepted(client, await client.call("POST", path), args)


async def _admin(client: Client, args: argparse.Namespace) -> int:
    """The host as it is now (the API answers with it)."""
    host = await client.call("POST", f"/hosts/{await _host(client, args)}/{args.host_command}")
    show_one(host, args.output, _FIELDS, select=args.columns)
    return 0
