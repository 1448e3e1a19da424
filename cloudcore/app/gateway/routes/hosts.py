"""Hypervisor hosts: infrastructure, for admins and operators only (a user gets 403). List with
filters, get, register a new one (this node starts managing it at once), and set what the
operator allows on it: enabled, disabled, in maintenance (a task that drains it), maintenance
cancelled."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from actors.host_lifecycle import HostOperation
from actors.registration import host_record
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import require
from cloudcore.app.gateway.listing import sorted_page
from cloudcore.app.gateway.lookup import referenced
from cloudcore.app.gateway.schemas import NamedQuery, TaskView, sort_of
from cloudcore.app.gateway.tasks import accepted
from cloudcore.errors import ConfigError, InvalidRequest, NotFound
from cloudcore.logging import get_logger
from cloudcore.store.records import AdminState, Datacenter, Host, HostHealth, Page, Role
from hypervisor_drivers.registry import load_driver

__all__ = ["HostQuery", "HostRegister", "api"]

api = Api("hosts")

_log = get_logger("cloudcore.app.gateway")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


class HostRegister(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A hypervisor host to manage. ``cpus`` and ``memory_mib`` are what it physically has;
    the host offers them times the datacenter's overcommit ratios. ``address`` is the
    driver's connection URI (libvirt: ``qemu+ssh://root@host/system``). ``name`` defaults to
    the id."""

    id: _Id
    datacenter_id: _Id
    name: _Name | None = None
    hypervisor: _Name
    address: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    cpus: Annotated[int, msgspec.Meta(ge=1, le=65536)]
    memory_mib: Annotated[int, msgspec.Meta(ge=16, le=1024 * 1024 * 1024)]
    capabilities: dict[str, str] = msgspec.field(default_factory=dict)


_HostSort = sort_of(
    "created_at", "updated_at", "id", "name", "datacenter_id", "health", "admin_state"
)


class HostQuery(NamedQuery, frozen=True, kw_only=True):
    sort: _HostSort | None = None  # type: ignore[valid-type]
    datacenter_id: _Id | None = None
    health: HostHealth | None = None
    admin_state: AdminState | None = None


_INFRA = (Role.ADMIN, Role.OPERATOR)


@api.get(
    "/hosts",
    query=HostQuery,
    reply=Page[Host],
    summary="List hosts (admin, operator)",
    errors=(403,),
)
async def list_hosts(req: ApiRequest[None, HostQuery]) -> Page[Host]:
    require(req.principal, *_INFRA)
    q = req.query
    where = {
        key: value
        for key in ("datacenter_id", "health", "admin_state", "name")
        if (value := getattr(q, key)) is not None
    }
    return await sorted_page(req.gateway.store, Host, where, q)


@api.get("/hosts/{host_id}", reply=Host, summary="Get a host", errors=(403, 404))
async def get_host(req: ApiRequest[None, None]) -> Host:
    require(req.principal, *_INFRA)
    return await req.gateway.store.get(Host, req.params["host_id"])


@api.post(
    "/hosts",
    body=HostRegister,
    reply=Host,
    status=201,
    summary="Register a host (admin, operator)",
    errors=(403, 409),
)
async def register_host(req: ApiRequest[HostRegister, None]) -> Reply:
    """Stores the host (409 if its id, or its name in the datacenter, is taken), then starts
    managing it; it takes VMs once its monitor has seen it healthy."""
    require(req.principal, *_INFRA)
    body, store = req.body, req.gateway.store
    await referenced(store, Datacenter, body.datacenter_id, "datacenter_id", "datacenter")
    try:  # refused before anything is stored: the node could not manage the host
        load_driver(body.hypervisor)
    except ConfigError as exc:
        raise InvalidRequest(f"hypervisor: {exc}") from exc
    record = host_record(
        req.gateway.settings,
        host_id=body.id,
        datacenter_id=body.datacenter_id,
        hypervisor=body.hypervisor,
        uri=body.address,
        physical_cpus=body.cpus,
        physical_memory_mib=body.memory_mib,
    )
    record = msgspec.structs.replace(
        record,
        name=body.name or body.id,
        capabilities={**body.capabilities, **record.capabilities},  # physical sizes win
    )
    host = await store.create(record)
    try:
        await req.gateway.orchestrator.add_host(host)
    except NotFound:
        # Another node runs this datacenter: it manages the host from its next start.
        _log.warning("host.registered_elsewhere", host_id=host.id, datacenter=host.datacenter_id)
    return Reply(host, 201, {"Location": f"/api/v1/hosts/{host.id}"})


async def _set_admin_state(req: ApiRequest[Any, Any], operation: HostOperation) -> Host:
    require(req.principal, *_INFRA)
    host_id = req.params["host_id"]
    await req.gateway.store.get(Host, host_id)  # 404 before anything changes
    return await req.gateway.orchestrator.set_admin_state(host_id, operation)


_ADMIN_STATE = {"reply": Host, "errors": (403, 404, 409)}


@api.post(
    "/hosts/{host_id}/enable", summary="Let the scheduler place VMs on a host", **_ADMIN_STATE
)
async def enable_host(req: ApiRequest[None, None]) -> Host:
    """From DISABLED, MAINTENANCE or ERROR_IN_MAINTENANCE (409 while it drains: cancel)."""
    return await _set_admin_state(req, HostOperation.ENABLE)


@api.post("/hosts/{host_id}/disable", summary="Place no new VMs on a host", **_ADMIN_STATE)
async def disable_host(req: ApiRequest[None, None]) -> Host:
    """VMs already on the host stay and keep running."""
    return await _set_admin_state(req, HostOperation.DISABLE)


@api.post(
    "/hosts/{host_id}/maintenance",
    reply=TaskView,
    status=202,
    summary="Put a host in maintenance: drain it by migration (admin, operator)",
    errors=(403, 404, 409),
)
async def maintain_host(req: ApiRequest[None, None]) -> Reply:
    """The host is PREPARING_FOR_MAINTENANCE at once (no new VMs); a task (202) migrates its
    VMs away, a few at a time, then the host is MAINTENANCE, or ERROR_IN_MAINTENANCE with the
    task naming each VM that stays and why. 409 if its state does not allow it."""
    require(req.principal, *_INFRA)
    host_id = req.params["host_id"]
    await req.gateway.store.get(Host, host_id)  # 404 before anything changes
    return await accepted(req, await req.gateway.orchestrator.maintain(host_id))


@api.post(
    "/hosts/{host_id}/maintenance/cancel",
    summary="Cancel a host's maintenance: ENABLED again",
    **_ADMIN_STATE,
)
async def cancel_maintenance(req: ApiRequest[None, None]) -> Host:
    """From PREPARING_FOR_MAINTENANCE (no further VM is moved; migrations in flight end),
    MAINTENANCE or ERROR_IN_MAINTENANCE."""
    return await _set_admin_state(req, HostOperation.CANCEL)
