"""The operator's pages (admins and operators): datacenters, hosts with their health, admin
state and capacity, the actor tree with mailbox depths and restarts, dead letters."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cloudcore.app.gateway.routes import hosts, system
from cloudcore.app.gateway.routes.datacenters import list_datacenters
from cloudcore.app.gateway.routes.hosts import HostQuery
from cloudcore.app.gateway.routes.system import DeadLetterQuery, TreeQuery
from cloudcore.app.gateway.schemas import NamedQuery
from cloudcore.app.web.context import Failed, Ui, page

__all__ = ["add_routes"]

_ADMIN_ACTIONS: dict[str, Any] = {
    "enable": hosts.enable_host,
    "disable": hosts.disable_host,
    "maintenance": hosts.maintain_host,
}


async def datacenters_page(ui: Ui) -> web.StreamResponse:
    dcs = (await ui.call(list_datacenters, query=NamedQuery(limit=1000))).items
    found = (await ui.call(hosts.list_hosts, query=HostQuery(limit=1000))).items
    counts = {dc.id: sum(1 for h in found if h.datacenter_id == dc.id) for dc in dcs}
    return ui.render("datacenters.html", datacenters=dcs, host_counts=counts)


async def _hosts(ui: Ui) -> list[Any]:
    return list((await ui.call(hosts.list_hosts, query=HostQuery(limit=1000))).items)


async def hosts_page(ui: Ui) -> web.StreamResponse:
    return ui.render("hosts.html", hosts=await _hosts(ui))


async def host_rows(ui: Ui) -> web.StreamResponse:
    return ui.render("_host_rows.html", hosts=await _hosts(ui))


async def host_action(ui: Ui) -> web.StreamResponse:
    host_id, action = ui.request.match_info["host_id"], ui.request.match_info["action"]
    handler = _ADMIN_ACTIONS.get(action)
    if handler is None:
        raise web.HTTPNotFound()
    try:
        host = await ui.call(handler, host_id=host_id)
    except Failed as exc:
        return ui.flash(f"Could not {action} the host: {exc.message}", error=exc)
    return ui.flash(f"Host {host.name} is now {host.admin_state}.")


async def actors_page(ui: Ui) -> web.StreamResponse:
    tree = await ui.call(system.actor_tree, query=TreeQuery(path="/user"))
    return ui.render("actors.html", actors=list(_rows(tree, 0)))


def _rows(info: Any, depth: int) -> Any:
    yield depth, info
    for child in info.children:
        yield from _rows(child, depth + 1)


async def dead_letters_page(ui: Ui) -> web.StreamResponse:
    found = await ui.call(system.dead_letters, query=DeadLetterQuery(limit=200))
    return ui.render("dead_letters.html", letters=list(reversed(found.items)), total=found.total)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/datacenters", page(datacenters_page, operator=True))
    app.router.add_get("/ui/hosts", page(hosts_page, operator=True))
    app.router.add_get("/ui/hosts/rows", page(host_rows, operator=True))
    app.router.add_post("/ui/hosts/{host_id}/{action}", page(host_action, operator=True))
    app.router.add_get("/ui/actors", page(actors_page, operator=True))
    app.router.add_get("/ui/dead-letters", page(dead_letters_page, operator=True))
