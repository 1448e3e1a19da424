"""``cloudcore network list|show|create|delete|addresses``: networks and the addresses held in
them, through the HTTP API. A network (and a datacenter) is given by its id or, within what the
caller sees, its name (:mod:`cloudcore.app.commands._resolve`)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cloudcore.app.client import Client
from cloudcore.app.commands._output import Column, show_list, show_one
from cloudcore.app.commands._resolve import DATACENTER, NETWORK, resolve
from cloudcore.app.commands._resource import Actions, body_of, list_records

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
    actions = Actions(sub, "network", "networks: list, show, create, delete, addresses")
    listing = actions.listing("list the networks you may use, the newest first", _list)
    listing.add_argument("--datacenter", help="only networks of this datacenter")
    listing.add_argument("--name", help="only networks of this name")

    actions.add("show", "show a network", _show, ref="NETWORK")
    actions.add(
        "addresses", "the addresses held in a network (and by whom)", _addresses, ref="NETWORK"
    )

    create = actions.add("create", "create a network", _create)
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

    actions.add("delete", "delete a network no address of which is held", _delete, ref="NETWORK")


async def network_id(client: Client, given: str) -> str:
    """The id of the network ``given`` names (an id, or the name of one the caller sees);
    an ambiguous name is refused listing the candidates' ids."""
    return await resolve(client, NETWORK, given)


async def _path(client: Client, args: argparse.Namespace, suffix: str = "") -> str:
    return f"/networks/{quote(await network_id(client, args.id), safe='')}{suffix}"


async def nic_body(client: Client, nic: str) -> dict[str, str]:
    """``NET[=ADDRESS]`` (NET an id or name) as a NIC of ``POST /vms``."""
    network, sep, address = nic.partition("=")
    body = {"network_id": await network_id(client, network)}
    if sep:
        body["address"] = address
    return body


async def _list(client: Client, args: argparse.Namespace) -> int:
    datacenter = args.datacenter and await resolve(client, DATACENTER, args.datacenter)
    return await list_records(
        client, args, "/networks", _COLUMNS, ("datacenter_id", datacenter), ("name", args.name)
    )


async def _show(client: Client, args: argparse.Namespace) -> int:
    show_one(await client.call("GET", await _path(client, args)), args.output, _FIELDS)
    return 0


async def _addresses(client: Client, args: argparse.Namespace) -> int:
    held = await client.call("GET", await _path(client, args, "/addresses"))
    show_list(held, args.output, _ADDRESSES, select=args.columns)
    return 0


async def _create(client: Client, args: argparse.Namespace) -> int:
    body = body_of(
        {
            "name": args.name,
            "datacenter_id": await resolve(client, DATACENTER, args.datacenter),
            "cidr": args.cidr,
            "bridge": args.bridge,
            "dns": args.dns,
            "excluded": args.exclude,
            "ranges": [_range(r) for r in args.range],
        },
        ("gateway", args.gateway),
        ("quarantine_s", args.quarantine),
        ("tenant_id", args.tenant),
    )
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
    found = await network_id(client, args.id)
    await client.call("DELETE", f"/networks/{quote(found, safe='')}")
    print(f"deleted {found}")
    return 0
