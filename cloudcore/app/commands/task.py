"""``cloudcore task list|show|recover|abort``: tasks through the API."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cloudcore.app.client import Client
from cloudcore.app.commands._api import api_command
from cloudcore.app.commands._output import add_listing_options, add_output_option, show_page
from cloudcore.app.commands._tasks import TASK_COLUMNS, accepted, show_task

__all__ = ["add_parser"]

_VERBS = ("retry", "succeed", "fail", "delete")


def add_parser(sub: Any) -> None:
    task = sub.add_parser("task", help="tasks: list, show, recover, abort")
    actions = task.add_subparsers(dest="task_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list tasks, the newest first")
    add_output_option(listing)
    listing.add_argument("--state", type=str.upper, help="only tasks in this state (FAILED, ...)")
    listing.add_argument("--subject", help="only tasks about this subject (vm/<id>)")
    add_listing_options(listing)
    listing.set_defaults(handler=api_command(_list))

    show = actions.add_parser("show", help="show a task and its steps")
    add_output_option(show)
    show.add_argument("id")
    show.add_argument("--wait", action="store_true", help="follow the task until it ends")
    show.set_defaults(handler=api_command(_show))

    recover = actions.add_parser(
        "recover",
        help="recover the VM of a failed task",
        description="retry: run the task again; succeed / fail: settle it; delete: the VM",
    )
    add_output_option(recover)
    recover.add_argument("id")
    recover.add_argument("verb", choices=_VERBS)
    recover.add_argument("--wait", action="store_true", help="follow the task until it ends")
    recover.set_defaults(handler=api_command(_recover))

    abort = actions.add_parser(
        "abort",
        help="abort a migration in flight",
        description="the VM stays where it was, running if it was; the task ends FAILED",
    )
    add_output_option(abort)
    abort.add_argument("id")
    abort.add_argument("--reason", help="recorded as the task's error")
    abort.add_argument("--wait", action="store_true", help="follow the task until it ends")
    abort.set_defaults(handler=api_command(_abort))


async def _list(client: Client, args: argparse.Namespace) -> int:
    wanted = {
        "limit": str(args.limit),
        "state": args.state,
        "subject": args.subject,
        "sort": args.sort,
        "cursor": args.page_token,
    }
    params = {key: value for key, value in wanted.items() if value}
    listing = await client.listing("/tasks", params, all_pages=args.all_pages)
    columns = [c for c in TASK_COLUMNS if c[0] != "PROGRESS"]  # a listing has no steps
    show_page(listing, args, columns)
    return 0


async def _show(client: Client, args: argparse.Namespace) -> int:
    task = await client.call("GET", f"/tasks/{quote(args.id, safe='')}")
    if args.wait:
        return await accepted(client, task, args)
    show_task(task, args.output, args.columns)
    return 0


async def _recover(client: Client, args: argparse.Namespace) -> int:
    path = f"/tasks/{quote(args.id, safe='')}/recover"
    return await accepted(client, await client.call("POST", path, body={"verb": args.verb}), args)


async def _abort(client: Client, args: argparse.Namespace) -> int:
    path = f"/tasks/{quote(args.id, safe='')}/abort"
    body = {} if args.reason is None else {"reason": args.reason}
    return await accepted(client, await client.call("POST", path, body=body), args)
