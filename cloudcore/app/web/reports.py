"""The operator's drift page: what the hypervisors and storage backends hold that the store
does not know (orphans), and what the store holds that they lack (missing), compared now.
Reported only: fixing drift is an operator's call (``cloudcore vm recover``, the backends'
own tools)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cloudcore.app.gateway.routes import hosts, volumes
from cloudcore.app.gateway.routes.hosts import HostQuery
from cloudcore.app.web.context import Failed, Ui, page
from cloudcore.errors import CloudcoreError

__all__ = ["add_routes"]


async def _sweeps(ui: Ui) -> list[dict[str, Any]]:
    """Each host's sweep now: its orphans and missing VMs, or why it could not be swept."""
    found = (await ui.call(hosts.list_hosts, query=HostQuery(limit=1000))).items
    rows: list[dict[str, Any]] = []
    for host in found:
        row: dict[str, Any] = {"host": host, "orphans": [], "missing": [], "error": None}
        try:
            report = await ui.gateway.orchestrator.sweep(host.datacenter_id, host.id)
        except (CloudcoreError, TimeoutError) as exc:
            row["error"] = str(exc) or type(exc).__name__
        else:
            row["orphans"] = report.orphans_on_hypervisor
            row["missing"] = report.missing_on_hypervisor
        rows.append(row)
    return rows


async def drift_page(ui: Ui) -> web.StreamResponse:
    try:
        storage = await ui.call(volumes.storage_drift)
        storage_error = None
    except Failed as exc:
        storage, storage_error = [], exc
    return ui.render(
        "drift.html", sweeps=await _sweeps(ui), storage=storage, storage_error=storage_error
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/drift", page(drift_page, operator=True))
