"""Tasks: get one (with its steps and progress), list, and an operator's recover verbs."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from actors.conversion import CONVERT
from actors.messages import RecoverVerb
from actors.routed_services import cancel_routed
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import require, tenant_filter
from cloudcore.app.gateway.listing import sorted_page
from cloudcore.app.gateway.lookup import visible
from cloudcore.app.gateway.schemas import TaskQuery, TaskView
from cloudcore.app.gateway.tasks import accepted, task_view
from cloudcore.errors import IllegalTransition
from cloudcore.store.records import Role, Task

__all__ = ["api"]

api = Api("tasks")


class RecoverBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``retry`` runs the failed task again; ``succeed`` and ``fail`` settle it; ``delete``
    deletes the VM."""

    verb: RecoverVerb


class TaskPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Task]
    next_cursor: str | None = None
    total: int | None = None


async def _visible_task(req: ApiRequest[Any, Any]) -> Task:
    # A task of no tenant is the platform's own: admins and operators only.
    return await visible(req, Task, req.params["task_id"], "task", shared=False)


@api.get("/tasks/{task_id}", reply=TaskView, summary="Get a task", errors=(404,))
async def get_task(req: ApiRequest[None, None]) -> TaskView:
    return await task_view(req.gateway.store, await _visible_task(req))


@api.get("/tasks", query=TaskQuery, reply=TaskPage, summary="List tasks")
async def list_tasks(req: ApiRequest[None, TaskQuery]) -> TaskPage:
    """The newest first unless ``sort`` says otherwise."""
    q = req.query
    where = tenant_filter(req.principal, q.tenant_id)
    if where is None:
        return TaskPage(items=[], total=0)
    if q.state is not None:
        where["state"] = q.state
    if q.subject is not None:
        where["subject"] = q.subject
    page = await sorted_page(req.gateway.store, Task, where, q)
    return TaskPage(items=page.items, next_cursor=page.next_cursor, total=page.total)


class AbortBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Why the task is stopped: recorded as its error."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] = "aborted by an operator"


@api.post(
    "/tasks/{task_id}/abort",
    body=AbortBody,
    reply=TaskView,
    status=202,
    summary="Abort a migration or a template conversion in flight (admin, operator)",
    errors=(403, 404, 409),
)
async def abort_task(req: ApiRequest[AbortBody, None]) -> Reply:
    """A migration: the hypervisor stops it and the VM stays where it was, running if it was;
    the task ends FAILED with the reason (follow it). A template conversion: it ends CANCELLED,
    its scratch file removed and the template AVAILABLE (by the node that runs it: 503 if that
    node is down). 409 if the task has ended or is neither."""
    task = await _visible_task(req)
    require(req.principal, Role.ADMIN, Role.OPERATOR)
    reason = f"{req.body.reason} (by {req.principal.user_id})"
    if task.kind == CONVERT:
        now = await cancel_routed(req.gateway.orchestrator, task)
    else:
        now = await req.gateway.orchestrator.abort(task.id, reason)
    return Reply(await task_view(req.gateway.store, now), 202)


@api.post(
    "/tasks/{task_id}/recover",
    body=RecoverBody,
    reply=TaskView,
    status=202,
    summary="Recover the VM of a failed task",
    errors=(403, 404, 409),
)
async def recover_task(req: ApiRequest[RecoverBody, None]) -> Reply:
    """For a VM in ERROR; admins and operators only. ``retry`` and ``delete`` answer 202
    with the task that does it; ``succeed`` and ``fail`` answer 200 with this task, settled."""
    task = await _visible_task(req)
    require(req.principal, Role.ADMIN, Role.OPERATOR)
    if not task.subject.startswith("vm/"):
        raise IllegalTransition(f"task {task.id} is about {task.subject}, not a VM")
    orchestrator = req.gateway.orchestrator
    follow = await orchestrator.recover(task.subject.removeprefix("vm/"), req.body.verb)
    if follow is not None:
        return await accepted(req, follow)
    settled = await req.gateway.store.get(Task, task.id)
    return Reply(await task_view(req.gateway.store, settled), 200)
