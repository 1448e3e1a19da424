"""The tenant's pages for what VMs use: volumes (list, create, attach, detach, delete; live),
networks and the addresses held in them, templates (list, create, upload an image)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cloudcore.app.gateway.routes import images, networks, templates, vms, volumes
from cloudcore.app.gateway.routes.datacenters import list_datacenters
from cloudcore.app.gateway.routes.images import UploadQuery
from cloudcore.app.gateway.routes.networks import NetworkQuery
from cloudcore.app.gateway.routes.templates import TemplateCreate
from cloudcore.app.gateway.schemas import NamedQuery, VMQuery
from cloudcore.app.gateway.volume_schemas import AttachBody, VolumeCreate, VolumeQuery
from cloudcore.app.web.context import Failed, Ui, create, form_body, page

__all__ = ["add_routes"]

_VOLUME_ACTIONS: dict[str, Any] = {
    "detach": volumes.detach_volume,
    "delete": volumes.delete_volume,
}


# -- volumes ------------------------------------------------------------------------------


async def _volumes(ui: Ui) -> list[Any]:
    return list((await ui.call(volumes.list_volumes, query=VolumeQuery(limit=1000))).items)


async def _attachable(ui: Ui) -> list[Any]:
    found = await ui.call(vms.list_vms, query=VMQuery(limit=1000))
    return [vm for vm in found.items if vm.state in ("RUNNING", "STOPPED", "PAUSED")]


async def volumes_page(ui: Ui) -> web.StreamResponse:
    dcs = (await ui.call(list_datacenters, query=NamedQuery(limit=1000))).items
    return ui.render(
        "volumes.html", volumes=await _volumes(ui), vms=await _attachable(ui), datacenters=dcs
    )


async def volume_rows(ui: Ui) -> web.StreamResponse:
    return ui.render("_volume_rows.html", volumes=await _volumes(ui), vms=await _attachable(ui))


async def create_volume(ui: Ui) -> web.StreamResponse:
    form = ui.form
    raw = {
        "name": form.get("name", ""),
        "datacenter_id": form.get("datacenter_id", ""),
        "size_gib": form.get("size_gib", ""),
        "tier": form.get("tier") or "standard",
    }
    return await create(
        ui, "volume", raw, VolumeCreate, volumes.create_volume,
        lambda body, task: f"Creating volume {body.name} (task {task.id}).",
    )  # fmt: skip


async def volume_action(ui: Ui) -> web.StreamResponse:
    volume_id, action = ui.request.match_info["volume_id"], ui.request.match_info["action"]
    try:
        volume = await ui.call(volumes.get_volume, volume_id=volume_id)
        if action == "attach":
            body = form_body({"vm_id": ui.form.get("vm_id", "")}, AttachBody, "attach")
            task = await ui.call(volumes.attach_volume, body=body, volume_id=volume_id)
        elif action in _VOLUME_ACTIONS:
            task = await ui.call(_VOLUME_ACTIONS[action], volume_id=volume_id)
        else:
            raise web.HTTPNotFound()
    except Failed as exc:
        return ui.flash(f"Could not {action} the volume: {exc.message}", error=exc)
    return ui.flash(f"{action.capitalize()} of volume {volume.name} started (task {task.id}).")


# -- networks -----------------------------------------------------------------------------


async def networks_page(ui: Ui) -> web.StreamResponse:
    found = (await ui.call(networks.list_networks, query=NetworkQuery(limit=1000))).items
    return ui.render("networks.html", networks=found)


async def addresses_page(ui: Ui) -> web.StreamResponse:
    network_id = ui.request.match_info["network_id"]
    try:
        network = await ui.call(networks.get_network, network_id=network_id)
        held = await ui.call(networks.list_addresses, network_id=network_id)
    except Failed as exc:
        return ui.render("addresses.html", status=exc.status, network=None, held=[], error=exc)
    return ui.render("addresses.html", network=network, held=held, error=None)


# -- templates ----------------------------------------------------------------------------


async def _templates(ui: Ui) -> list[Any]:
    return list((await ui.call(templates.list_templates, query=NamedQuery(limit=1000))).items)


async def templates_page(ui: Ui) -> web.StreamResponse:
    dcs = (await ui.call(list_datacenters, query=NamedQuery(limit=1000))).items
    return ui.render("templates.html", templates=await _templates(ui), datacenters=dcs)


async def template_rows(ui: Ui) -> web.StreamResponse:
    return ui.render("_template_rows.html", templates=await _templates(ui))


async def create_template(ui: Ui) -> web.StreamResponse:
    form = ui.form
    raw: dict[str, Any] = {
        "name": form.get("name", ""),
        "os_type": form.get("os_type", ""),
        "datacenter_id": form.get("datacenter_id") or None,
    }
    return await create(
        ui, "template", raw, TemplateCreate, templates.create_template,
        lambda _, made: f"Template {made.name} created: upload its image below.",
    )  # fmt: skip


async def upload_image(ui: Ui) -> web.StreamResponse:
    """The body is the image itself (the page's script sends the file, its size and sha256):
    the API's upload handler reads it from this request, as it would from ``PUT /image``."""
    template_id = ui.request.match_info["template_id"]
    raw = {"size": ui.request.query.get("size", ""), "sha256": ui.request.query.get("sha256", "")}
    try:
        query = form_body(raw, UploadQuery, "upload")
        template = await ui.call(images.upload_image, query=query, template_id=template_id)
    except Failed as exc:
        return ui.flash(f"Could not upload the image: {exc.message}", error=exc)
    if template.state != "AVAILABLE":
        return ui.flash(f"Template {template.name} is {template.state}: {template.error or ''}")
    return ui.flash(
        f"Template {template.name} is AVAILABLE: {template.disk_format}, "
        f"{template.virtual_size} bytes virtual."
    )


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/ui/volumes", page(volumes_page))
    router.add_post("/ui/volumes", page(create_volume))
    router.add_get("/ui/volumes/rows", page(volume_rows))
    router.add_post("/ui/volumes/{volume_id}/{action}", page(volume_action))
    router.add_get("/ui/networks", page(networks_page))
    router.add_get("/ui/networks/{network_id}/addresses", page(addresses_page))
    router.add_get("/ui/templates", page(templates_page))
    router.add_post("/ui/templates", page(create_template))
    router.add_get("/ui/templates/rows", page(template_rows))
    router.add_put("/ui/templates/{template_id}/image", page(upload_image))
