"""``cloudcore vm ...``: VMs through the HTTP API.

``list``, ``show`` read; ``create``, the power and lifecycle actions and ``delete`` answer with
the task that does the work (202), which ``--wait`` follows to its end with a progress bar.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cloudcore.app.client import Client
from cloudcore.app.commands._api import api_command
from cloudcore.app.commands._output import Column, add_output_option, show_list, show_one
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
    ("MEMORY_MIB", "spec.memory_mib"),
]

_FIELDS: list[Column] = [
    *_COLUMNS,
    ("TENANT", "tenant_id"),
    ("DESIRED", "desired_state"),
    ("DISK_GIB", "spec.disk_gib"),
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
    vm = sub.add_parser("vm", help="VMs: list, show, create, operate, delete")
    actions = vm.add_subparsers(dest="vm_command", required=True, metavar="ACTION")

    def action(name: str, help: str, handler: Any, wait: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help)
        add_output_option(parser)
        if wait:
            parser.add_argument("--wait", action="store_true", help="follow the task until it ends")
        parser.set_defaults(handler=api_command(handler))
        return parser

    listing = action("list", "list VMs", _list, wait=False)
    listing.add_argument("--state", type=str.upper, help="only VMs in this state (RUNNING, ...)")
    listing.add_argument("--datacenter", help="only VMs in this datacenter")
    listing.add_argument("--host", help="only VMs on this host")
    listing.add_argument("--tenant", help="only this tenant's VMs (admins, operators)")
    listing.add_argument("--limit", type=int, default=100, help="VMs per page (default 100)")
    listing.add_argument("--all-pages", action="store_true", help="follow every page")

    action("show", "show a VM", _show, wait=False).add_argument("id")

    create = action("create", "create a VM (and start it)", _create)
    create.add_argument("--name", required=True)
    create.add_argument("--datacenter", required=True)
    create.add_argument("--cpus", type=int, required=True)
    create.add_argument("--memory", type=int, required=True, metavar="MIB")
    create.add_argument("--disk", type=int, default=0, metavar="GIB")
    create.add_argument("--template")
    create.add_argument("--tenant", help="create it for this tenant (admins, operators)")
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
        action(name, help, _simple).add_argument("id")

    stop = action("stop", "power a VM off (gracefully, then hard after the timeout)", _stop)
    stop.add_argument("id")
    stop.add_argument("--hard", action="store_true", help="power off at once")
    stop.add_argument("--timeout", type=float, metavar="S", help="seconds before a hard stop")

    reboot = action("reboot", "reboot a VM", _reboot)
    reboot.add_argument("id")
    reboot.add_argument("--hard", action="store_true", help="reset rather than ACPI reboot")

    reconfigure = action("reconfigure", "resize a VM", _reconfigure)
    reconfigure.add_argument("id")
    reconfigure.add_argument("--cpus", type=int)
    reconfigure.add_argument("--memory", type=int, metavar="MIB")

    snapshot = action("snapshot", "snapshot a VM", _snapshot)
    snapshot.add_argument("id")
    snapshot.add_argument("name")

    migrate = action("migrate", "move a VM to another host", _migrate)
    migrate.add_argument("id")
    migrate.add_argument("--host", help="the target host (default: the scheduler picks)")
    migrate.add_argument(
        "--deadline", type=float, metavar="S", help="abort it after S seconds (default: config)"
    )

    ha = action("ha", "restart a VM elsewhere if its host fails (or not)", _ha, wait=False)
    ha.add_argument("id")
    ha.add_argument("state", choices=("on", "off"))
    ha.add_argument("--priority", type=int, default=0, help="higher restarts first (0-1000)")

    action("delete", "delete a VM", _delete).add_argument("id")
    add_console(actions)


async def _list(client: Client, args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    for key, value in (
        ("state", args.state),
        ("datacenter_id", args.datacenter),
        ("host_id", args.host),
        ("tenant_id", args.tenant),
    ):
        if value:
            params[key] = value
    listing = await client.listing("/vms", params, all_pages=args.all_pages)
    show_list(listing["items"], args.output, _COLUMNS, listing)
    return 0


async def _show(client: Client, args: argparse.Namespace) -> int:
    """The VM, with the addresses its NICs hold (``address mac network`` each)."""
    path = f"/vms/{quote(args.id, safe='')}"
    vm = await client.call("GET", path)
    nics = await client.call("GET", f"{path}/nics")
    vm["addresses"] = [f"{n['address']} {n['mac']} {n['network_id']}" for n in nics]
    show_one(vm, args.output, _FIELDS)
    return 0


async def _create(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "name": args.name,
        "datacenter_id": args.datacenter,
        "cpus": args.cpus,
        "memory_mib": args.memory,
        "disk_gib": args.disk,
        "start": not args.no_start,
    }
    if args.template:
        body["template_id"] = args.template
    if args.tenant:
        body["tenant_id"] = args.tenant
    if args.nic:
        body["nics"] = [await nic_body(client, nic) for nic in args.nic]
    if args.ha:
        body |= {"ha": True, "ha_priority": args.ha_priority}
    return await accepted(client, await client.call("POST", "/vms", body=body), args)


async def _ha(client: Client, args: argparse.Namespace) -> int:
    body = {"ha": args.state == "on", "priority": args.priority}
    vm = await client.call("POST", f"/vms/{quote(args.id, safe='')}/ha", body=body)
    show_one(vm, args.output, _FIELDS)
    return 0


async def _act(
    client: Client, args: argparse.Namespace, verb: str, body: dict[str, Any] | None = None
) -> int:
    task = await client.call("POST", f"/vms/{quote(args.id, safe='')}/{verb}", body=body)
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


async def _migrate(client: Client, args: argparse.Namespace) -> int:
    body = {k: v for k, v in (("host_id", args.host), ("deadline", args.deadline)) if v is not None}
    return await _act(client, args, "migrate", body)


async def _delete(client: Client, args: argparse.Namespace) -> int:
    task = await client.call("DELETE", f"/vms/{quote(args.id, safe='')}")
    return await accepted(client, task, args)
