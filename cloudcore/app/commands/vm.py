"""``cloudcore vm ...``: VMs through the HTTP API.

``list``, ``show`` read; ``create``, the power and lifecycle actions, ``recover`` and ``delete``
answer with the task that does the work (202), which ``--wait`` follows to its end with a
progress bar. A VM (and a datacenter, host or template) is given by id or by name.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any
from urllib.parse import quote

from cloudcore.app.client import Client
from cloudcore.app.commands import _resolve
from cloudcore.app.commands._api import CliError
from cloudcore.app.commands._output import Column, gib, mib, show_list, show_one
from cloudcore.app.commands._resolve import resolve
from cloudcore.app.commands._resource import Actions, body_of, list_records
from cloudcore.app.commands._tasks import accepted
from cloudcore.app.commands.network import nic_body
from cloudcore.app.commands.vm_console import add_console

__all__ = ["add_parser"]

_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("STATE", "state"),
    ("POWER", "power"),
    ("DATACENTER", "datacenter_id"),
    ("HOST", "host_id"),
    ("CPUS", "spec.cpus"),
    ("MEMORY", mib("spec.memory_mib")),
]

_FIELDS: list[Column] = [
    *_COLUMNS,
    ("TENANT", "tenant_id"),
    ("DESIRED", "desired_state"),
    ("DISK", gib("spec.disk_gib")),
    ("TASK", "task_id"),
    ("HA", "spec.ha"),
    ("HA_PRIORITY", "spec.ha_priority"),
    ("FAULT", "fault"),
    ("ADDRESSES", "addresses"),
    ("CREATED", "created_at"),
    ("UPDATED", "updated_at"),
]

#: Actions that take nothing but the VM: name, help.
_SIMPLE = {
    "start": "power a VM on",
    "pause": "pause a VM (in memory)",
    "resume": "resume a paused or suspended VM",
    "suspend": "suspend a VM (to disk)",
}


def add_parser(sub: Any) -> None:
    vms = Actions(sub, "vm", "VMs: list, show, create, operate, delete")
    action = functools.partial(vms.add, wait=True)
    listing = vms.listing("list VMs, the newest first", _list)
    listing.add_argument("--state", type=str.upper, help="only VMs in this state (RUNNING, ...)")
    listing.add_argument("--datacenter", help="only VMs in this datacenter")
    listing.add_argument("--host", help="only VMs on this host")
    listing.add_argument("--tenant", help="only this tenant's VMs (admins, operators)")
    listing.add_argument("--name", help="only VMs of this name")
    listing.add_argument("--deleted", action="store_true", help="deleted VMs too")

    show = vms.add("show", "show a VM", _show, ref="VM")
    show.add_argument("--deleted", action="store_true", help="a deleted VM (admins, operators)")

    create = action("create", "create a VM (and start it)", _create)
    create.add_argument("--name", required=True)
    create.add_argument("--datacenter", required=True)
    create.add_argument("--cpus", type=int, required=True)
    create.add_argument("--memory", type=int, required=True, metavar="MIB")
    create.add_argument("--disk", type=int, default=0, metavar="GIB")
    create.add_argument("--template")
    create.add_argument(
        "--boot-volume",
        metavar="VOLUME",
        help="boot from this AVAILABLE volume (id or name) instead of a template",
    )
    create.add_argument(
        "--delete-on-termination",
        action="store_true",
        help="with --boot-volume: deleting the VM deletes the volume too (default: kept)",
    )
    create.add_argument(
        "--tenant",
        help="create it for this tenant (admins, operators; default: the caller's own tenant)",
    )
    create.add_argument("--ha", action="store_true", help="restart it elsewhere if its host fails")
    create.add_argument("--ha-priority", type=int, default=0, help="higher restarts first")
    create.add_argument("--no-start", action="store_true", help="define it but do not start it")
    create.add_argument(
        "--nic",
        "--network",
        action="append",
        default=[],
        metavar="NET[=ADDRESS]",
        help="a NIC on network NET (id or name), with ADDRESS if given (repeatable)",
    )

    for name, help in _SIMPLE.items():
        action(name, help, _simple, ref="VM")

    stop = action(
        "stop", "power a VM off (gracefully, then hard after the timeout)", _stop, ref="VM"
    )
    stop.add_argument("--hard", action="store_true", help="power off at once")
    stop.add_argument("--timeout", type=float, metavar="S", help="seconds before a hard stop")

    reboot = action("reboot", "reboot a VM", _reboot, ref="VM")
    reboot.add_argument("--hard", action="store_true", help="reset rather than ACPI reboot")

    reconfigure = action("reconfigure", "resize a VM", _reconfigure, ref="VM")
    reconfigure.add_argument("--cpus", type=int)
    reconfigure.add_argument("--memory", type=int, metavar="MIB")

    snapshot = action("snapshot", "snapshot a VM", _snapshot, ref="VM")
    snapshot.add_argument("name")

    action("snapshots", "list a VM's snapshots, oldest first", _snapshots, wait=False, ref="VM")
    for name, help, handler in (
        ("revert", "revert a VM to a snapshot (disks, memory, power)", _revert),
        ("delete-snapshot", "delete a VM's snapshot", _delete_snapshot),
    ):
        action(name, help, handler, ref="VM").add_argument("name", metavar="SNAPSHOT")

    migrate = action("migrate", "move a VM to another host", _migrate, ref="VM")
    migrate.add_argument("--host", help="the target host (default: the scheduler picks)")
    migrate.add_argument(
        "--deadline", type=float, metavar="S", help="abort it after S seconds (default: config)"
    )

    ha = action(
        "ha", "restart a VM elsewhere if its host fails (or not)", _ha, wait=False, ref="VM"
    )
    ha.add_argument("state", choices=("on", "off"))
    ha.add_argument("--priority", type=int, default=0, help="higher restarts first (0-1000)")

    recover = action(
        "recover",
        "settle a VM in ERROR: retry its failed task, succeed or fail it, or delete the VM",
        _recover,
        ref="VM",
    )
    recover.add_argument("verb", choices=("retry", "succeed", "fail", "delete"))

    action("delete", "delete a VM", _delete, ref="VM")
    add_console(vms.subparsers)


async def _list(client: Client, args: argparse.Namespace) -> int:
    return await list_records(
        client,
        args,
        "/vms",
        _COLUMNS,
        ("state", args.state),
        ("datacenter_id", args.datacenter and await resolve(client, DC, args.datacenter)),
        ("host_id", args.host and await resolve(client, _resolve.HOST, args.host)),
        ("tenant_id", args.tenant),
        ("name", args.name),
        ("deleted", args.deleted and "true"),
    )


DC = _resolve.DATACENTER


async def _vm(client: Client, args: argparse.Namespace) -> str:
    """The VM's id, quoted for a path."""
    return quote(await resolve(client, _resolve.VM, args.id), safe="")


async def _show(client: Client, args: argparse.Namespace) -> int:
    """The VM, with the addresses its NICs hold (``address mac network`` each). ``--deleted``:
    a tombstone, which has no name to find it by (the id as given) and no NICs."""
    if args.deleted:
        path = f"/vms/{quote(args.id, safe='')}"
        vm = await client.call("GET", path, params={"deleted": "true"})
    else:
        path = f"/vms/{await _vm(client, args)}"
        vm = await client.call("GET", path)
        nics = await client.call("GET", f"{path}/nics")
        vm["addresses"] = [f"{n['address']} {n['mac']} {n['network_id']}" for n in nics]
    show_one(vm, args.output, _FIELDS, select=args.columns)
    return 0


async def _create(client: Client, args: argparse.Namespace) -> int:
    template = args.template and await resolve(client, _resolve.TEMPLATE, args.template)
    body = body_of(
        {
            "name": args.name,
            "datacenter_id": await resolve(client, DC, args.datacenter),
            "cpus": args.cpus,
            "memory_mib": args.memory,
            "disk_gib": args.disk,
            "start": not args.no_start,
        },
        ("template_id", template),
        ("tenant_id", args.tenant),
    )
    if args.nic:
        body["nics"] = [await nic_body(client, nic) for nic in args.nic]
    if args.ha:
        body |= {"ha": True, "ha_priority": args.ha_priority}
    if args.boot_volume:
        volume = await resolve(client, _resolve.VOLUME, args.boot_volume)
        body["boot_volume"] = {
            "volume_id": volume,
            "delete_on_termination": args.delete_on_termination,
        }
    elif args.delete_on_termination:
        raise CliError("--delete-on-termination goes with --boot-volume")
    return await accepted(client, await client.call("POST", "/vms", body=body), args)


async def _ha(client: Client, args: argparse.Namespace) -> int:
    body = {"ha": args.state == "on", "priority": args.priority}
    vm = await client.call("POST", f"/vms/{await _vm(client, args)}/ha", body=body)
    show_one(vm, args.output, _FIELDS)
    return 0


async def _act(
    client: Client, args: argparse.Namespace, verb: str, body: dict[str, Any] | None = None
) -> int:
    task = await client.call("POST", f"/vms/{await _vm(client, args)}/{verb}", body=body)
    return await accepted(client, task, args)


async def _simple(client: Client, args: argparse.Namespace) -> int:
    return await _act(client, args, args.vm_command)


async def _stop(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"hard": args.hard}
    if args.timeout is not None:
        body["timeout"] = args.timeout
    return await _act(client, args, "stop", body)


async def _reboot(client: Client, args: argparse.Namespace) -> int:
    return await _act(client, args, "reboot", {"hard": args.hard})


async def _reconfigure(client: Client, args: argparse.Namespace) -> int:
    body = {k: v for k, v in (("cpus", args.cpus), ("memory_mib", args.memory)) if v is not None}
    return await _act(client, args, "reconfigure", body)


async def _snapshot(client: Client, args: argparse.Namespace) -> int:
    return await _act(client, args, "snapshot", {"name": args.name})


_SNAPSHOT_COLUMNS: list[Column] = [("NAME", "name"), ("CREATED", "created_at"), ("POWER", "power")]


async def _snapshots(client: Client, args: argparse.Namespace) -> int:
    taken = await client.call("GET", f"/vms/{await _vm(client, args)}/snapshots")
    show_list(taken, args.output, _SNAPSHOT_COLUMNS, select=args.columns)
    return 0


async def _revert(client: Client, args: argparse.Namespace) -> int:
    return await _act(client, args, f"snapshots/{quote(args.name, safe='')}/revert")


async def _delete_snapshot(client: Client, args: argparse.Namespace) -> int:
    path = f"/vms/{await _vm(client, args)}/snapshots/{quote(args.name, safe='')}"
    return await accepted(client, await client.call("DELETE", path), args)


async def _migrate(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"deadline": args.deadline} if args.deadline is not None else {}
    if args.host is not None:
        body["host_id"] = await resolve(client, _resolve.HOST, args.host)
    return await _act(client, args, "migrate", body)


async def _recover(client: Client, args: argparse.Namespace) -> int:
    """The task that retries or deletes, or the VM's last task, settled."""
    path = f"/vms/{await _vm(client, args)}/recover"
    return await accepted(client, await client.call("POST", path, body={"verb": args.verb}), args)


async def _delete(client: Client, args: argparse.Namespace) -> int:
    task = await client.call("DELETE", f"/vms/{await _vm(client, args)}")
    return await accepted(client, task, args)
