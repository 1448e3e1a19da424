"""``cloudcore volume ...``: iSCSI volumes through the HTTP API.

``list``, ``show``, ``snapshots`` read; ``create``, ``extend``, ``attach``, ``detach``,
``snapshot``, ``delete-snapshot`` and ``delete`` answer with the task that does the work (202),
which ``--wait`` follows to its end with a progress bar. ``pools`` shows the storage pools
(admins, operators).
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cloudcore.app.client import Client
from cloudcore.app.commands._api import api_command
from cloudcore.app.commands._output import Column, add_output_option, show_list, show_one
from cloudcore.app.commands._tasks import accepted

__all__ = ["add_parser"]

_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("STATE", "state"),
    ("SIZE_GIB", "size_gib"),
    ("TIER", "tier"),
    ("POOL", "pool_id"),
    ("VM", "vm_id"),
    ("DEVICE", "device"),
]

_FIELDS: list[Column] = [
    *_COLUMNS,
    ("TENANT", "tenant_id"),
    ("DATACENTER", "datacenter_id"),
    ("TARGET", "target"),
    ("TASK", "task_id"),
    ("FAULT", "fault"),
    ("CREATED", "created_at"),
    ("UPDATED", "updated_at"),
]

_SNAPSHOTS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("STATE", "state"),
    ("SIZE_GIB", "size_gib"),
    ("CREATED", "created_at"),
]

_POOLS: list[Column] = [
    ("ID", "id"),
    ("DATACENTER", "datacenter_id"),
    ("DRIVER", "driver"),
    ("TIER", "tier"),
    ("CONNECTED", "connected"),
    ("TOTAL_MIB", "total_mib"),
    ("LIMIT_MIB", "limit_mib"),
    ("COMMITTED_MIB", "committed_mib"),
]


def add_parser(sub: Any) -> None:
    volume = sub.add_parser("volume", help="iSCSI volumes: create, attach, extend, snapshot...")
    actions = volume.add_subparsers(dest="volume_command", required=True, metavar="ACTION")

    def action(name: str, help: str, handler: Any, wait: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help)
        add_output_option(parser)
        if wait:
            parser.add_argument("--wait", action="store_true", help="follow the task until it ends")
        parser.set_defaults(handler=api_command(handler))
        return parser

    listing = action("list", "list volumes", _list, wait=False)
    listing.add_argument("--state", type=str.upper, help="only volumes in this state")
    listing.add_argument("--datacenter", help="only volumes in this datacenter")
    listing.add_argument("--vm", help="only volumes attached to this VM")
    listing.add_argument("--tenant", help="only this tenant's volumes (admins, operators)")
    listing.add_argument("--limit", type=int, default=100, help="volumes per page (default 100)")
    listing.add_argument("--all-pages", action="store_true", help="follow every page")

    action("show", "show a volume", _show, wait=False).add_argument("id")

    create = action("create", "create a volume", _create)
    create.add_argument("--name", required=True)
    create.add_argument("--datacenter", required=True)
    create.add_argument("--size", type=int, metavar="GIB", help="(default: the source's)")
    create.add_argument("--tier", default="standard", help="the kind of pool (default standard)")
    source = create.add_mutually_exclusive_group()
    source.add_argument("--snapshot", help="start with the data of this snapshot")
    source.add_argument("--clone-of", metavar="VOLUME", help="start with a copy of this volume")
    create.add_argument("--tenant", help="create it for this tenant (admins, operators)")

    extend = action("extend", "grow a volume", _extend)
    extend.add_argument("id")
    extend.add_argument("--size", type=int, required=True, metavar="GIB")

    attach = action("attach", "attach a volume to a VM (hot when it runs)", _attach)
    attach.add_argument("id")
    attach.add_argument("--vm", required=True)

    action("detach", "detach a volume from its VM", _detach).add_argument("id")

    snapshot = action("snapshot", "snapshot a volume", _snapshot)
    snapshot.add_argument("id")
    snapshot.add_argument("name")

    action("snapshots", "list a volume's snapshots", _snapshots, wait=False).add_argument("id")

    drop = action("delete-snapshot", "delete a snapshot of a volume", _delete_snapshot)
    drop.add_argument("id")
    drop.add_argument("snapshot")

    action("delete", "delete a volume", _delete).add_argument("id")
    action("pools", "list storage pools (admins, operators)", _pools, wait=False)


def _path(args: argparse.Namespace, *rest: str) -> str:
    return "/".join([f"/volumes/{quote(args.id, safe='')}", *rest])


async def _list(client: Client, args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    for key, value in (
        ("state", args.state),
        ("datacenter_id", args.datacenter),
        ("vm_id", args.vm),
        ("tenant_id", args.tenant),
    ):
        if value:
            params[key] = value
    listing = await client.listing("/volumes", params, all_pages=args.all_pages)
    show_list(listing["items"], args.output, _COLUMNS, listing)
    return 0


async def _show(client: Client, args: argparse.Namespace) -> int:
    show_one(await client.call("GET", _path(args)), args.output, _FIELDS)
    return 0


async def _create(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "datacenter_id": args.datacenter, "tier": args.tier}
    for key, value in (
        ("size_gib", args.size),
        ("tenant_id", args.tenant),
        ("snapshot_id", args.snapshot),
        ("source_volume_id", args.clone_of),
    ):
        if value is not None:
            body[key] = value
    return await accepted(client, await client.call("POST", "/volumes", body=body), args)


async def _post(client: Client, args: argparse.Namespace, verb: str, body: Any = None) -> int:
    return await accepted(client, await client.call("POST", _path(args, verb), body=body), args)


async def _extend(client: Client, args: argparse.Namespace) -> int:
    return await _post(client, args, "extend", {"size_gib": args.size})


async def _attach(client: Client, args: argparse.Namespace) -> int:
    return await _post(client, args, "attach", {"vm_id": args.vm})


async def _detach(client: Client, args: argparse.Namespace) -> int:
    return await _post(client, args, "detach")


async def _snapshot(client: Client, args: argparse.Namespace) -> int:
    return await _post(client, args, "snapshots", {"name": args.name})


async def _snapshots(client: Client, args: argparse.Namespace) -> int:
    listing = await client.listing(_path(args, "snapshots"), {}, all_pages=True)
    show_list(listing["items"], args.output, _SNAPSHOTS, listing)
    return 0


async def _delete_snapshot(client: Client, args: argparse.Namespace) -> int:
    path = _path(args, "snapshots", quote(args.snapshot, safe=""))
    return await accepted(client, await client.call("DELETE", path), args)


async def _delete(client: Client, args: argparse.Namespace) -> int:
    return await accepted(client, await client.call("DELETE", _path(args)), args)


async def _pools(client: Client, args: argparse.Namespace) -> int:
    pools = await client.call("GET", "/storage-pools")
    show_list(pools, args.output, _POOLS, None)
    return 0
