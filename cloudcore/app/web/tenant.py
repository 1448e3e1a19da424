"""The tenant's pages: VMs (live), create from a template with a size, every action, the
graphical and serial consoles, tasks with their progress (live), events (live), quotas."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cloudcore.app.gateway.routes import consoles, events, quotas, tasks, templates, vms
from cloudcore.app.gateway.routes.datacenters import list_datacenters
from cloudcore.app.gateway.routes.events import EventQuery
from cloudcore.app.gateway.schemas import (
    NamedQuery,
    StopBody,
    TaskQuery,
    TombstoneQuery,
    VMCreate,
    VMQuery,
)
from cloudcore.app.gateway.tasks import task_view
from cloudcore.app.web.context import Failed, Ui, create, page
from hypervisor_drivers.types import ConsoleKind

__all__ = ["SIZES", "add_routes"]

#: The sizes offered when creating a VM: (name, cpus, memory in MiB).
SIZES = (("small", 1, 512), ("medium", 2, 2048), ("large", 4, 8192))
_ACTIONS: dict[str, Any] = {
    "start": vms.start_vm,
    "stop": vms.stop_vm,
    "reboot": vms.reboot_vm,
    "pause": vms.pause_vm,
    "resume": vms.resume_vm,
    "suspend": vms.suspend_vm,
    "delete": vms.delete_vm,
}
_RECENT_EVENTS = 50


async def _vms(ui: Ui) -> list[Any]:
    page_ = await ui.call(vms.list_vms, query=VMQuery(limit=1000))
    return [vm for vm in page_.items if vm.state != "DELETED"]


async def vms_page(ui: Ui) -> web.StreamResponse:
    dcs = (await ui.call(list_datacenters, query=NamedQuery(limit=1000))).items
    tpls = (await ui.call(templates.list_templates, query=NamedQuery(limit=1000))).items
    return ui.render("vms.html", vms=await _vms(ui), datacenters=dcs, templates=tpls, sizes=SIZES)


async def vm_rows(ui: Ui) -> web.StreamResponse:
    return ui.render("_vm_rows.html", vms=await _vms(ui))


def _create_body(form: Any) -> dict[str, Any]:
    size = {name: (cpus, mib) for name, cpus, mib in SIZES}.get(form.get("size", ""))
    raw: dict[str, Any] = {
        "name": form.get("name", ""),
        "datacenter_id": form.get("datacenter_id", ""),
        "template_id": form.get("template_id") or None,
        "start": form.get("start", "on") == "on",
    }
    if size is not None:
        raw["cpus"], raw["memory_mib"] = size
    else:
        for field in ("cpus", "memory_mib"):
            raw[field] = form.get(field, "")
    return raw


async def create_vm(ui: Ui) -> web.StreamResponse:
    return await create(
        ui, "VM", _create_body(ui.form), VMCreate, vms.create_vm,
        lambda body, task: f"Creating VM {body.name} (task {task.id}).",
    )  # fmt: skip


async def vm_action(ui: Ui) -> web.StreamResponse:
    vm_id, action = ui.request.match_info["vm_id"], ui.request.match_info["action"]
    handler = _ACTIONS.get(action)
    if handler is None:
        raise web.HTTPNotFound()
    body = StopBody(hard=ui.form.get("hard") == "on") if action == "stop" else None
    try:
        vm = await ui.call(vms.get_vm, query=TombstoneQuery(), vm_id=vm_id)
        task = await ui.call(handler, body=body, vm_id=vm_id)
    except Failed as exc:
        return ui.flash(f"Could not {action} the VM: {exc.message}", error=exc)
    return ui.flash(f"{action.capitalize()} of VM {vm.name} started (task {task.id}).")


async def console_page(ui: Ui) -> web.StreamResponse:
    vm_id = ui.request.match_info["vm_id"]
    try:
        vm = await ui.call(vms.get_vm, query=TombstoneQuery(), vm_id=vm_id)
        console = await ui.call(consoles.get_console, vm_id=vm_id)
    except Failed as exc:
        return ui.render("console.html", status=exc.status, vm=None, console=None, error=exc)
    return ui.render("console.html", vm=vm, console=console, error=None)


async def serial_page(ui: Ui) -> web.StreamResponse:
    vm_id = ui.request.match_info["vm_id"]
    query = consoles.ConsoleQuery(kind=ConsoleKind.SERIAL)
    try:
        vm = await ui.call(vms.get_vm, query=TombstoneQuery(), vm_id=vm_id)
        console = await ui.call(consoles.get_console, query=query, vm_id=vm_id)
    except Failed as exc:
        return ui.render("serial.html", status=exc.status, vm=None, console=None, error=exc)
    return ui.render("serial.html", vm=vm, console=console, error=None)


async def _tasks(ui: Ui) -> list[Any]:
    page_ = await ui.call(tasks.list_tasks, query=TaskQuery(limit=1000))
    newest = sorted(page_.items, key=lambda t: t.created_at, reverse=True)[:100]
    return [await task_view(ui.gateway.store, task) for task in newest]


async def tasks_page(ui: Ui) -> web.StreamResponse:
    return ui.render("tasks.html", tasks=await _tasks(ui))


async def task_rows(ui: Ui) -> web.StreamResponse:
    return ui.render("_task_rows.html", tasks=await _tasks(ui))


async def events_page(ui: Ui) -> web.StreamResponse:
    found = await ui.call(events.list_events, query=EventQuery(limit=_RECENT_EVENTS))
    return ui.render("events.html", events=found.items)


async def quotas_page(ui: Ui) -> web.StreamResponse:
    found = await ui.call(quotas.get_quotas, tenant_id=ui.principal.tenant_id)
    return ui.render("quotas.html", quotas=found.items, tenant_id=found.tenant_id)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/vms", page(vms_page))
    app.router.add_post("/ui/vms", page(create_vm))
    app.router.add_get("/ui/vms/rows", page(vm_rows))
    app.router.add_post("/ui/vms/{vm_id}/{action}", page(vm_action))
    app.router.add_get("/ui/vms/{vm_id}/console", page(console_page))
    app.router.add_get("/ui/vms/{vm_id}/serial", page(serial_page))
    app.router.add_get("/ui/tasks", page(tasks_page))
    app.router.add_get("/ui/tasks/rows", page(task_rows))
    app.router.add_get("/ui/events", page(events_page))
    app.router.add_get("/ui/quotas", page(quotas_page))
