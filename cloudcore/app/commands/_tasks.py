"""Tasks as commands show them, and waiting for one to end (``--wait``).

Waiting subscribes to the task's events first and reads the task second, so a task that ends
between the two is never missed: either the read already shows it ended, or its
``task.finished`` event arrives on the stream. A stream that drops is reopened from the last
event seen (``Last-Event-ID``). A node without the events endpoint is polled instead.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cloudcore.app.client import ApiFailure, Client
from cloudcore.app.commands._output import Column, show_list, show_one
from cloudcore.app.commands._progress import ProgressBar

__all__ = ["FINAL", "TASK_COLUMNS", "accepted", "show_task", "wait_for_task"]

FINAL = frozenset({"SUCCEEDED", "FAILED", "COMPENSATED", "CANCELLED"})
_POLL_INTERVAL = 0.5


def _percent(item: dict[str, Any]) -> str:
    return f"{float(item.get('progress') or 0):.0%}"


TASK_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("KIND", "kind"),
    ("SUBJECT", "subject"),
    ("STATE", "state"),
    ("PROGRESS", _percent),
    ("CREATED", "created_at"),
    ("ERROR", "error"),
]

_STEP_COLUMNS: list[Column] = [
    ("SEQ", "seq"),
    ("STEP", "name"),
    ("STATE", "state"),
    ("UPDATED", "updated_at"),
    ("ERROR", "error"),
]


def show_task(task: dict[str, Any], output: str, select: list[str] | None = None) -> None:
    """A task's fields, then (as a table) its steps."""
    if output != "table" or select:
        show_one(task, output, TASK_COLUMNS, select=select)
        return
    show_one(task, output, TASK_COLUMNS)
    steps = task.get("steps") or []
    if steps:
        print()
        show_list(steps, output, _STEP_COLUMNS)


async def accepted(client: Client, task: dict[str, Any], args: argparse.Namespace) -> int:
    """After a 202: show the task, or with ``--wait`` follow it and show how it ended."""
    select = getattr(args, "columns", None)
    if not getattr(args, "wait", False):
        show_task(task, args.output, select)
        return 0
    label = " ".join(str(task[k]) for k in ("kind", "subject") if task.get(k))
    code, final = await wait_for_task(client, task["id"], label or "task")
    if args.output != "table" or select:
        show_task(final, args.output, select)
    # A table adds nothing to the bar's last line, which names the task and how it ended.
    return code


async def wait_for_task(
    client: Client, task_id: str, label: str = "task"
) -> tuple[int, dict[str, Any]]:
    """Follow a task until it ends, with a progress bar on stderr whose last line is
    ``label`` and how it ended. Returns (exit code, task): 0 if it SUCCEEDED, else 1. Ctrl-C
    stops waiting; the task goes on."""
    bar = ProgressBar(label)
    try:
        task = await _follow(client, task_id, bar)
    except asyncio.CancelledError:
        bar.interrupt(
            f"stopped waiting; task {task_id} goes on (see `cloudcore task show {task_id}`)"
        )
        raise
    bar.done(task["state"], task.get("error"))
    return (0 if task["state"] == "SUCCEEDED" else 1), task


async def _follow(client: Client, task_id: str, bar: ProgressBar) -> dict[str, Any]:
    last_id: str | None = None
    while True:
        opened = False
        try:
            async with client.stream(
                "/events/stream", {"subject": f"task/{task_id}"}, last_id
            ) as events:
                opened = True
                task = await _read(client, task_id, bar)
                if task["state"] in FINAL:
                    return task
                async for event in events:
                    last_id = event.id or last_id
                    data = (event.json() or {}).get("data") or {}
                    if event.event == "task.step":
                        bar.update(
                            float(data.get("progress") or 0),
                            int(data.get("seq") or 0),
                            str(data.get("step")),
                            str(data.get("state")),
                            data.get("error"),
                        )
                    elif event.event == "task.finished":
                        return await _read(client, task_id, bar)
        except ApiFailure as exc:
            if opened or exc.status != 404:
                raise
            return await _poll(client, task_id, bar)
        # The stream ended before the task did: open it again from the last event seen.


async def _poll(client: Client, task_id: str, bar: ProgressBar) -> dict[str, Any]:
    while True:
        task = await _read(client, task_id, bar)
        if task["state"] in FINAL:
            return task
        await asyncio.sleep(_POLL_INTERVAL)


async def _read(client: Client, task_id: str, bar: ProgressBar) -> dict[str, Any]:
    """GET the task and show its steps (those already shown are skipped by the bar)."""
    task: dict[str, Any] = await client.call("GET", f"/tasks/{task_id}")
    steps = task.get("steps") or []
    done_total = sum(1 for s in steps if s.get("state") == "DONE")
    progress = float(task.get("progress") or 0)
    done = 0
    for step in steps:
        done += step.get("state") == "DONE"
        share = progress * done / done_total if done_total else 0.0
        bar.update(
            share, int(step["seq"]), str(step["name"]), str(step["state"]), step.get("error")
        )
    return task
