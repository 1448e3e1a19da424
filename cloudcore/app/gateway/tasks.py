"""How a task is shown: with its steps and progress; and the 202 that points at it."""

from __future__ import annotations

from typing import Any

from actors.journal import progress_of
from cloudcore.app.gateway.api import ApiRequest, Reply
from cloudcore.app.gateway.schemas import TaskView
from cloudcore.store import Store
from cloudcore.store.records import StepState, Task

__all__ = ["accepted", "task_view"]


async def task_view(store: Store, task: Task) -> TaskView:
    steps = await store.list_steps(task.id)
    done: float = sum(1 for step in steps if step.state is StepState.DONE)
    # A running step that reports its own percent (a conversion, a migration) counts for the
    # part it has done.
    done += sum(
        min(float(step.data.get("percent", 0.0)), 100.0) / 100.0
        for step in steps
        if step.state is StepState.RUNNING
    )
    return TaskView(
        id=task.id,
        kind=task.kind,
        subject=task.subject,
        state=task.state,
        tenant_id=task.tenant_id,
        error=task.error,
        data=task.data,
        progress=progress_of(task, done),
        steps=steps,
        created_at=task.created_at,
        updated_at=task.updated_at,
    )


async def accepted(req: ApiRequest[Any, Any], task: Task) -> Reply:
    """202 Accepted with the task, and its location."""
    view = await task_view(req.gateway.store, task)
    return Reply(view, 202, {"Location": f"/api/v1/tasks/{task.id}"})
