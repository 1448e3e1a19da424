"""``cloudcore network list|show|create|delete|addresses``: networks and the addresses held in
them, through the HTTP API. A network is named by its id or, within what the caller sees, its
name."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cloudcore.app.client import ApiFailure, Client
from cloudcore.app.commands._api import api_command
from cloudcore.app.commands._output import Column, add_output_option, show_list, show_one

__all__ = ["add_parser", "network_id", "nic_body"]

_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("DATACENTER", "datacenter_id"),
    ("TENANT", "tenant_id"),
    ("CIDR", "cidr"),
    ("GATEWAY", "gateway"),
    ("BRIDGE", "bridge"),
]

_FIELDS: list[Column] = [
    *_COLUMNS,
    ("KIND", "kind"),
    ("VLAN", "vlan"),
    ("DNS", "dns"),
    ("RANGES", "ranges"),
    ("EXCLUDED", "excluded"),
    ("QUARANTINE_S", "quarantine_s"),
    ("EXTRA", "extra"),
    ("CREATED", "created_at"),
]

_ADDRESSES: list[Column] = [
    ("ADDRESS", "address"),
    ("MAC", "mac"),
    ("VM", "vm_id"),
    ("TENANT", "tenant_id"),
    ("SINCE", "created_at"),
]


def add_parser(sub: Any) -> None:
    network = sub.add_parser("network", help="networks: list, show, create, delete, addresses")
    actions = network.add_subparsers(dest="network_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list the networks you may use")
    add_output_option(listing)
    listing.add_argument("--datacenter", help="only networks of this datacenter")
    listing.set_defaults(handler=api_command(_list))

    for name, help, handler in (
        ("show", "show a network", _show),
        ("addresses", "the addresses held in a network (and by whom)", _addresses),
    ):
        parser = actions.add_parser(name, help=help)
        add_output_option(parser)
        parser.add_argument("network", help="id or name")
        parser.set_defaults(handler=api_command(handler))

    create = actions.add_parser("create", help="create a network")
    add_output_option(create)
    create.add_argument("--name", required=True)
    create.add_argument("--datacenter", required=True)
    create.add_argument("--cidr", required=True, help="10.0.0.0/24 or fd00::/64")
    create.add_argument("--gateway")
    create.add_argument("--bridge", default="", help="the host bridge its NICs plug into")
    create.add_argument("--vlan", type=int, help="a VLAN network's tag (1-4094)")
    create.add_argument("--dns", action="append", default=[], help="a DNS server (repeatable)")
    create.add_argument(
        "--range", action="append", default=[], metavar="FIRST-LAST", help="repeatable"
    )
    create.add_argument("--exclude", action="append", default=[], metavar="ADDRESS")
    create.add_argument("--quarantine", type=int, metavar="S", help="seconds before reuse")
    create.add_argument("--public", action="store_true", help="a public network (admins)")
    create.add_argument("--tenant", help="another tenant's private network (admins)")
    create.set_defaults(handler=api_command(_create))

    delete = actions.add_parser("delete", help="delete a network no address of which is held")
    delete.add_argument("network", help="id or name")
    delete.set_defaults(handler=api_command(_delete))


async def network_id(client: Client, given: str) -> str:
    """The id of the network ``given`` names: an id, else the name of one the caller sees
    (ambiguous or unknown: a failure naming it)."""
    try:
        await client.call("GET", f"/networks/{quote(given, safe='')}")
        return given
    except ApiFailure as exc:
        if exc.status != 404:
            raise
    listing = await client.listing("/networks", {}, all_pages=True)
    ids = [n["id"] for n in listing["items"] if n["name"] == given]
    if len(ids) != 1:
        why = "no network" if not ids else f"{len(ids)} networks ({', '.join(ids)})"
        raise ApiFailure(f"{why} called {given!r}: give its id", status=404, code="not_found")
    return str(ids[0])


async def nic_body(client: Client, nic: str) -> dict[str, str]:
    """``NET[=ADDRESS]`` (NET an id or name) as a NIC of ``POST /vms``."""
    network, sep, address = nic.partition("=")
    body = {"network_id": await network_id(client, network)}
    if sep:
        body["address"] = address
    return body


async def _list(client: Client, args: argparse.Namespace) -> int:
    params = {"datacenter_id": args.datacenter} if args.datacenter else {}
    listing = await client.listing("/networks", params, all_pages=True)
    show_list(listing["items"], args.output, _COLUMNS, listing)
    return 0


async def _show(client: Client, args: argparse.Namespace) -> int:
    found = await network_id(client, args.network)
    show_one(await client.call("GET", f"/networks/{quote(found, safe='')}"), args.output, _FIELDS)
    return 0


async def _addresses(client: Client, args: argparse.Namespace) -> int:
    found = await network_id(client, args.network)
    held = await client.call("GET", f"/networks/{quote(found, safe='')}/addresses")
    show_list(held, args.output, _ADDRESSES)
    return 0


async def _create(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "name": args.name,
        "datacenter_id": args.datacenter,
        "cidr": args.cidr,
        "bridge": args.bridge,
        "dns": args.dns,
        "excluded": args.exclude,
        "ranges": [_range(r) for r in args.range],
    }
    for key, value in (
        ("gateway", args.gateway),
        ("quarantine_s", args.quarantine),
        ("tenant_id", args.tenant),
    ):
        if value is not None:
            body[key] = value
    if args.vlan is not None:
        body |= {"kind": "vlan", "vlan": args.vlan}
    if args.public:
        body["tenant_id"] = None
    show_one(await client.call("POST", "/networks", body=body), args.output, _FIELDS)
    return 0


def _range(text: str) -> dict[str, str]:
    first, _, last = text.partition("-")
    return {"first": first, "last": last or first}


async def _delete(client: Client, args: argparse.Namespace) -> int:
    found = await network_id(client, args.network)
    await client.call("DELETE", f"/networks/{quote(found, safe='')}")
    print(f"deleted {found}")
    return 0
