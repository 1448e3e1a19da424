"""``cloudcore volume ...``: iSCSI volumes through the HTTP API.

``list``, ``show``, ``snapshots`` read; ``create``, ``extend``, ``attach``, ``detach``,
``snapshot``, ``delete-snapshot`` and ``delete`` answer with the task that does the work (202),
which ``--wait`` follows to its end with a progress bar. ``pools`` shows the storage pools
(admins, operators). A volume (and a VM or datacenter) is given by id or by name.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cloudcore.app.client import Client
from cloudcore.app.commands import _resolve
from cloudcore.app.commands._output import Column, gib, show_list, show_one
from cloudcore.app.commands._resolve import DATACENTER, resolve
from cloudcore.app.commands._resource import Actions, body_of, list_records
from cloudcore.app.commands._tasks import accepted

__all__ = ["add_parser"]

_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("STATE", "state"),
    ("SIZE", gib("size_gib")),
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
    actions = Actions(sub, "volume", "iSCSI volumes: create, attach, extend, snapshot...")
    listing = actions.listing("list volumes, the newest first", _list)
    listing.add_argument("--state", type=str.upper, help="only volumes in this state")
    listing.add_argument("--datacenter", help="only volumes in this datacenter")
    listing.add_argument("--vm", help="only volumes attached to this VM")
    listing.add_argument("--tenant", help="only this tenant's volumes (admins, operators)")
    listing.add_argument("--name", help="only volumes of this name")

    actions.add("show", "show a volume", _show, ref="VOLUME")

    create = actions.add("create", "create a volume", _create, wait=True)
    create.add_argument("--name", required=True)
    create.add_argument("--datacenter", required=True)
    create.add_argument("--size", type=int, metavar="GIB", help="(default: the source's)")
    create.add_argument("--tier", default="standard", help="the kind of pool (default standard)")
    source = create.add_mutually_exclusive_group()
    source.add_argument("--snapshot", help="start with the data of this snapshot")
    source.add_argument("--clone-of", metavar="VOLUME", help="start with a copy of this volume")
    create.add_argument("--tenant", help="create it for this tenant (admins, operators)")

    extend = actions.add("extend", "grow a volume", _extend, wait=True, ref="VOLUME")
    extend.add_argument("--size", type=int, required=True, metavar="GIB")

    attach = actions.add(
        "attach", "attach a volume to a VM (hot when it runs)", _attach, wait=True, ref="VOLUME"
    )
    attach.add_argument("--vm", required=True, help="id or name")

    actions.add("detach", "detach a volume from its VM", _detach, wait=True, ref="VOLUME")
    snapshot = actions.add("snapshot", "snapshot a volume", _snapshot, wait=True, ref="VOLUME")
    snapshot.add_argument("name")
    actions.add("snapshots", "list a volume's snapshots", _snapshots, ref="VOLUME")
    drop = actions.add(
        "delete-snapshot",
        "delete a snapshot of a volume",
        _delete_snapshot,
        wait=True,
        ref="VOLUME",
    )
    drop.add_argument("snapshot")
    actions.add("delete", "delete a volume", _delete, wait=True, ref="VOLUME")
    actions.add("pools", "list storage pools (admins, operators)", _pools)


async def _path(client: Client, args: argparse.Namespace, *rest: str) -> str:
    """The volume's path (``args.id`` an id or a name), then ``rest``."""
    volume_id = await resolve(client, _resolve.VOLUME, args.id)
    return "/".join([f"/volumes/{quote(volume_id, safe='')}", *rest])


async def _list(client: Client, args: argparse.Namespace) -> int:
    return await list_records(
        client,
        args,
        "/volumes",
        _COLUMNS,
        ("state", args.state),
        ("datacenter_id", args.datacenter and await resolve(client, DATACENTER, args.datacenter)),
        ("vm_id", args.vm and await resolve(client, _resolve.VM, args.vm)),
        ("tenant_id", args.tenant),
        ("name", args.name),
    )


async def _show(client: Client, args: argparse.Namespace) -> int:
    show_one(await client.call("GET", await _path(client, args)), args.output, _FIELDS)
    return 0


async def _create(client: Client, args: argparse.Namespace) -> int:
    body = body_of(
        {
            "name": args.name,
            "datacenter_id": await resolve(client, DATACENTER, args.datacenter),
            "tier": args.tier,
        },
        ("size_gib", args.size),
        ("tenant_id", args.tenant),
        ("snapshot_id", args.snapshot),
        (
            "source_volume_id",
            args.clone_of and await resolve(client, _resolve.VOLUME, args.clone_of),
        ),
    )
    return await accepted(client, await client.call("POST", "/volumes", body=body), args)


async def _post(client: Client, args: argparse.Namespace, verb: str, body: Any = None) -> int:
    path = await _path(client, args, verb)
    return await accepted(client, await client.call("POST", path, body=body), args)


async def _extend(client: Client, args: argparse.Namespace) -> int:
    return await _post(client, args, "extend", {"size_gib": args.size})


async def _attach(client: Client, args: argparse.Namespace) -> int:
    return await _post(
        client, args, "attach", {"vm_id": await resolve(client, _resolve.VM, args.vm)}
    )


async def _detach(client: Client, args: argparse.Namespace) -> int:
    return await _post(client, args, "detach")


async def _snapshot(client: Client, args: argparse.Namespace) -> int:
    return await _post(client, args, "snapshots", {"name": args.name})


async def _snapshots(client: Client, args: argparse.Namespace) -> int:
    listing = await client.listing(await _path(client, args, "snapshots"), {}, all_pages=True)
    show_list(listing["items"], args.output, _SNAPSHOTS, listing, select=args.columns)
    return 0


async def _delete_snapshot(client: Client, args: argparse.Namespace) -> int:
    path = await _path(client, args, "snapshots", quote(args.snapshot, safe=""))
    return await accepted(client, await client.call("DELETE", path), args)


async def _delete(client: Client, args: argparse.Namespace) -> int:
    return await accepted(client, await client.call("DELETE", await _path(client, args)), args)


async def _pools(client: Client, args: argparse.Namespace) -> int:
    pools = await client.call("GET", "/storage-pools")
    show_list(pools, args.output, _POOLS, None, select=args.columns)
    return 0
