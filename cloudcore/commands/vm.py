"""``cloudcore vm list|deploy``: VMs, straight from the store of a node on this machine.

``deploy`` writes the VM and its deploy task (PENDING) into the store; the running node picks the
task up within a second and runs it. ``--wait`` follows the task's journal until it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from cloudcore.config import Settings, load_settings
from cloudcore.errors import CloudcoreError
from cloudcore.logging import configure_logging

__all__ = ["add_parser"]

_FINAL = {"SUCCEEDED", "FAILED", "COMPENSATED", "CANCELLED"}


def add_parser(sub: Any) -> None:
    vm = sub.add_parser("vm", help="list and deploy VMs")
    actions = vm.add_subparsers(dest="vm_command", required=True)

    listing = actions.add_parser("list", help="list VMs")
    listing.add_argument("--state", help="only VMs in this state (RUNNING, STOPPED, ...)")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    listing.set_defaults(handler=_list)

    deploy = actions.add_parser("deploy", help="deploy a VM on the running node")
    deploy.add_argument("name")
    deploy.add_argument("--cpus", type=int, default=1)
    deploy.add_argument("--memory-mib", type=int, default=512)
    deploy.add_argument("--datacenter", help="default: the demo datacenter")
    deploy.add_argument("--tenant", help="default: the demo tenant")
    deploy.add_argument("--stopped", action="store_true", help="define it but do not start it")
    deploy.add_argument("--wait", action="store_true", help="follow the task until it ends")
    deploy.add_argument("--timeout", type=float, default=120.0)
    deploy.set_defaults(handler=_deploy)


def _list(args: argparse.Namespace) -> int:
    return _run(args, _list_vms)


def _deploy(args: argparse.Namespace) -> int:
    return _run(args, _deploy_vm)


def _run(args: argparse.Namespace, command: Any) -> int:
    try:
        settings = load_settings(args.config)
        configure_logging("warning", settings.log.format)
        code: int = asyncio.run(command(settings, args))
    except (CloudcoreError, ValueError) as exc:
        print(f"cloudcore: {exc}", file=sys.stderr)
        return 2
    return code


async def _list_vms(settings: Settings, args: argparse.Namespace) -> int:
    from cloudcore.store import open_store
    from cloudcore.store.records import VM

    store = await open_store(settings)
    try:
        where = {"state": args.state.upper()} if args.state else None
        page = await store.list(VM, where=where, limit=args.limit)
    finally:
        await store.close()
    if args.output == "json":
        sys.stdout.write(msgspec.json.encode(page.items).decode() + "\n")
        return 0
    rows = [("ID", "NAME", "STATE", "POWER", "HOST", "CPUS", "MEMORY_MIB")]
    rows += [
        (
            v.id,
            v.name,
            str(v.state),
            str(v.power),
            v.host_id or "-",
            str(v.spec.cpus),
            str(v.spec.memory_mib),
        )
        for v in page.items
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _deploy_vm(settings: Settings, args: argparse.Namespace) -> int:
    from actors.orchestrator import Orchestrator
    from cloudcore.store import open_store
    from cloudcore.store.records import VMSpec

    spec = msgspec.convert({"cpus": args.cpus, "memory_mib": args.memory_mib}, VMSpec)
    store = await open_store(settings)
    try:
        task = await Orchestrator.submit_deploy(
            store,
            tenant_id=args.tenant or settings.demo.tenant,
            datacenter_id=args.datacenter or settings.demo.datacenter,
            name=args.name,
            spec=spec,
            start=not args.stopped,
        )
        vm_id = task.subject.removeprefix("vm/")
        print(f"VM {vm_id} ({args.name}): deploy task {task.id} submitted")
        if not args.wait:
            return 0
        return await _follow(store, task.id, vm_id, args.timeout)
    finally:
        await store.close()


async def _follow(store: Any, task_id: str, vm_id: str, timeout: float) -> int:
    """Print each journaled step as it ends, then the VM's final state."""
    from cloudcore.store.records import VM, Task

    shown: set[tuple[int, str]] = set()
    async with asyncio.timeout(timeout):
        while True:
            task = await store.get(Task, task_id)
            for step in await store.list_steps(task_id):
                key = (step.seq, str(step.state))
                if key not in shown and str(step.state) != "PENDING":
                    shown.add(key)
                    print(
                        f"  step {step.seq} {step.name}: {step.state}"
                        + (f" ({step.error})" if step.error else "")
                    )
            if str(task.state) in _FINAL:
                break
            await asyncio.sleep(0.2)
    vm = await store.get(VM, vm_id)
    print(
        f"task {task.state}; VM {vm.state} on {vm.host_id or 'no host'}"
        + (f": {task.error}" if task.error else "")
    )
    return 0 if str(task.state) == "SUCCEEDED" else 1
