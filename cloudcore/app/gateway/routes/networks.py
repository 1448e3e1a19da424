"""Networks and public addresses.

A network is a tenant's private one, or public (``tenant_id`` null, made by admins) with
addresses tenants take and give back (``/public-ips``, counted by the ``public_ips`` quota). A
user sees its tenant's networks and the public ones; in a public network only the addresses its
tenant holds. Bad definitions are 422 naming the field (``cidr``, ``gateway``, ``ranges[1]``...).

A network created or deleted, a public address attached or detached, is written with its event,
then the node that owns the network's datacenter is called to reload its DHCP configuration
(:mod:`actors.routed_services`): 503 with Retry-After, before anything is written, if it is down.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from actors.routed_services import network_route, send_network_change
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import Principal
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.listing import order_of, sorted_page
from cloudcore.app.gateway.lookup import referenced, visible
from cloudcore.app.gateway.schemas import ListQuery, NamedQuery
from cloudcore.app.gateway.shared import own_and_public
from cloudcore.errors import InvalidRecord, NotFound
from cloudcore.store.records import (
    VM,
    AddressRange,
    Datacenter,
    IpAllocation,
    Network,
    NetworkKind,
    OutboxEvent,
    Page,
    Role,
    Tenant,
    VMState,
    new_id,
)

__all__ = ["NetworkCreate", "PublicIpAttach", "PublicIpTake", "api"]

api = Api("networks")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
_Addr = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Iface = Annotated[str, msgspec.Meta(max_length=15, pattern=r"^[A-Za-z0-9_.-]*$")]


class NetworkCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new network. ``tenant_id`` left out: the caller's tenant's private network; another
    tenant: admins and operators only; null: a public network, admins only. ``ranges`` left
    out: every host address of ``cidr``. ``bridge``: the host bridge (a Linux interface name)."""

    name: _Name
    datacenter_id: _Id
    cidr: _Addr
    kind: NetworkKind = NetworkKind.BRIDGE
    vlan: int | None = None
    gateway: _Addr | None = None
    dns: Annotated[list[_Addr], msgspec.Meta(max_length=8)] = []
    ranges: Annotated[list[AddressRange], msgspec.Meta(max_length=64)] = []
    excluded: Annotated[list[_Addr], msgspec.Meta(max_length=1024)] = []
    bridge: _Iface = ""
    quarantine_s: Annotated[int, msgspec.Meta(ge=0, le=30 * 86400)] = 300
    extra: dict[str, Annotated[str, msgspec.Meta(max_length=200)]] = {}
    tenant_id: _Id | msgspec.UnsetType | None = msgspec.UNSET


class NetworkQuery(NamedQuery, frozen=True, kw_only=True):
    datacenter_id: _Id | None = None


class PublicIpTake(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Take an address of a public network for the caller's tenant: ``address`` if given (409
    naming its holder when taken), else a free one."""

    network_id: _Id
    address: _Addr | None = None


class PublicIpAttach(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Attach a public address the tenant took to its VM ``vm_id``, as a NIC."""

    vm_id: _Id


def _owner(principal: Principal, requested: str | msgspec.UnsetType | None) -> str | None:
    if requested is msgspec.UNSET or requested == principal.tenant_id:
        return principal.tenant_id
    if requested is None:
        if principal.role is not Role.ADMIN:
            raise ApiError(403, "forbidden", "only admins create public networks")
        return None
    if not principal.sees_all:
        raise ApiError(
            403, "forbidden", "only admins and operators create networks for another tenant"
        )
    return requested


async def _visible(req: ApiRequest[Any, Any]) -> Network:
    return await visible(req, Network, req.params["network_id"], "network")


def _event(kind: str, network: Network, **data: Any) -> OutboxEvent:
    return OutboxEvent(
        type=kind, subject=f"network/{network.id}", tenant_id=network.tenant_id, data=data
    )


@api.post(
    "/networks",
    body=NetworkCreate,
    reply=Network,
    status=201,
    summary="Create a network",
    errors=(403, 409),
)
async def create_network(req: ApiRequest[NetworkCreate, None]) -> Reply:
    """422 naming the field for a malformed CIDR, a gateway outside it, ranges that do not fit
    or overlap, a VLAN id out of range, a CIDR overlapping another network of the datacenter;
    409 for a name its owner already uses in the datacenter."""
    body, store = req.body, req.gateway.store
    tenant_id = _owner(req.principal, body.tenant_id)
    if tenant_id is not None:
        await referenced(store, Tenant, tenant_id, "tenant_id", "tenant")
    await referenced(store, Datacenter, body.datacenter_id, "datacenter_id", "datacenter")
    port = await network_route(req.gateway.orchestrator, body.datacenter_id)  # 503 first
    network = Network(
        id=new_id("net-"),
        tenant_id=tenant_id,
        datacenter_id=body.datacenter_id,
        name=body.name,
        cidr=body.cidr,
        gateway=body.gateway,
        vlan=body.vlan,
        kind=body.kind,
        dns=tuple(body.dns),
        ranges=tuple(body.ranges),
        excluded=tuple(body.excluded),
        bridge=body.bridge,
        quarantine_s=body.quarantine_s,
        extra=dict(body.extra),
    )
    created = await store.create_network(
        network, events=[_event("network.created", network, cidr=network.cidr)]
    )
    await send_network_change(port, network.datacenter_id, network.id, "network.created")
    return Reply(created, 201, {"Location": f"/api/v1/networks/{created.id}"})


@api.get("/networks", query=NetworkQuery, reply=Page[Network], summary="List networks")
async def list_networks(req: ApiRequest[None, NetworkQuery]) -> Page[Network]:
    """The newest first unless ``sort`` says otherwise. A user's pages interleave its tenant's
    networks with the public ones."""
    q, store = req.query, req.gateway.store
    where: dict[str, object] = {}
    for key in ("datacenter_id", "name"):
        if (value := getattr(q, key)) is not None:
            where[key] = value
    scope = req.principal.scope()
    if scope is None:
        return await sorted_page(store, Network, where, q)
    order = order_of(q.sort)
    return await own_and_public(store, Network, scope, q.cursor, q.limit, where=where, order=order)


@api.get("/networks/{network_id}", reply=Network, summary="Get a network", errors=(404,))
async def get_network(req: ApiRequest[None, None]) -> Network:
    return await _visible(req)


@api.delete(
    "/networks/{network_id}",
    status=204,
    summary="Delete a network no address of which is held",
    errors=(403, 404, 409),
)
async def delete_network(req: ApiRequest[None, None]) -> Reply:
    """By its tenant's users, or an admin; a public network by an admin only. 409 naming a
    holder while an address is held."""
    network = await _visible(req)
    principal = req.principal
    if principal.role is not Role.ADMIN and network.tenant_id != principal.tenant_id:
        raise ApiError(403, "forbidden", "only admins delete public or other tenants' networks")
    port = await network_route(req.gateway.orchestrator, network.datacenter_id)  # 503 first
    await req.gateway.store.delete_network(network.id, events=[_event("network.deleted", network)])
    await send_network_change(port, network.datacenter_id, network.id, "network.deleted")
    return Reply(None, 204)


@api.get(
    "/networks/{network_id}/addresses",
    reply=list[IpAllocation],
    summary="List the addresses held in a network",
    errors=(404,),
)
async def list_addresses(req: ApiRequest[None, None]) -> list[IpAllocation]:
    """All of them in a private network; in a public one, a user sees its tenant's only."""
    network = await _visible(req)
    scope = req.principal.scope()
    tenant = scope if network.tenant_id is None else None
    return await req.gateway.store.list_ips(network.id, tenant_id=tenant)


@api.post(
    "/public-ips",
    body=PublicIpTake,
    reply=IpAllocation,
    status=201,
    summary="Take a public address for the caller's tenant",
    errors=(409,),
)
async def take_public_ip(req: ApiRequest[PublicIpTake, None]) -> Reply:
    """409 ``quota_exceeded`` past the tenant's ``public_ips`` quota, ``addresses_exhausted``
    when the network has none left, ``already_exists`` naming the holder of a taken address."""
    body, store = req.body, req.gateway.store
    network = await referenced(store, Network, body.network_id, "network_id", "network")
    if network.tenant_id is not None:
        raise InvalidRecord(f"network_id: network {network.id} is not a public network")
    tenant_id = req.principal.tenant_id
    held = await store.allocate_ip(
        network.id,
        body.address,
        tenant_id=tenant_id,
        events=[_event("address.taken", network, tenant_id=tenant_id)],  # + address, by the store
    )
    location = f"/api/v1/public-ips/{network.id}/{held.address}"
    return Reply(held, 201, {"Location": location})


@api.get("/public-ips", query=ListQuery, reply=list[IpAllocation], summary="List public addresses")
async def list_public_ips(req: ApiRequest[None, ListQuery]) -> list[IpAllocation]:
    """The caller's tenant's (admins and operators: every tenant's)."""
    return await req.gateway.store.list_ips(tenant_id=req.principal.scope(), public=True)


@api.delete(
    "/public-ips/{network_id}/{address}",
    status=204,
    summary="Give a public address back",
    errors=(404, 409),
)
async def give_back_public_ip(req: ApiRequest[None, None]) -> Reply:
    """By the tenant holding it (or an admin). It rests in quarantine before anyone gets it
    again. 409 while it is attached to a VM."""
    network, held = await _public_held(req)
    if held.vm_id is not None:
        raise ApiError(409, "conflict", f"{held.address} is attached to VM {held.vm_id}")
    await req.gateway.store.release_ip(
        network.id,
        held.address,
        events=[
            _event("address.released", network, tenant_id=held.tenant_id, address=held.address)
        ],
    )
    return Reply(None, 204)


async def _public_held(req: ApiRequest[Any, Any]) -> tuple[Network, IpAllocation]:
    """The public address of the path, if the caller's tenant holds it (admins: anyone's)."""
    network_id, address = req.params["network_id"], req.params["address"]
    store = req.gateway.store
    missing = NotFound(f"public address {address} of network {network_id} not found")
    try:
        network = await store.get(Network, network_id)
    except NotFound:
        raise missing from None
    held = [
        a
        for a in await store.list_ips(network_id, tenant_id=req.principal.scope())
        if a.address == address
    ]
    if not held or network.tenant_id is not None or held[0].tenant_id is None:
        raise missing
    return network, held[0]


@api.post(
    "/public-ips/{network_id}/{address}/attach",
    body=PublicIpAttach,
    reply=IpAllocation,
    summary="Attach a public address to a VM, as a NIC (a new MAC)",
    errors=(404, 409),
)
async def attach_public_ip(req: ApiRequest[PublicIpAttach, None]) -> IpAllocation:
    """The VM must be the holding tenant's, in the network's datacenter (else 422 naming
    ``vm_id``); 409 if the address is attached to another VM. The DHCP server of the network
    serves the new NIC (``nic.added``). The same attachment again answers as the first."""
    network, held = await _public_held(req)
    assert held.tenant_id is not None
    try:
        vm = await visible(req, VM, req.body.vm_id, "VM")
    except NotFound:
        raise InvalidRecord(f"vm_id: no VM {req.body.vm_id!r}") from None
    if vm.tenant_id != held.tenant_id or vm.datacenter_id != network.datacenter_id:
        raise InvalidRecord(
            f"vm_id: VM {vm.id} is not tenant {held.tenant_id}'s in datacenter "
            f"{network.datacenter_id}"
        )
    if vm.state in (VMState.DELETING, VMState.DELETED):
        raise ApiError(409, "conflict", f"VM {vm.id} is {vm.state.value}")
    port = await network_route(req.gateway.orchestrator, network.datacenter_id)  # 503 first
    attached = await req.gateway.store.attach_ip(
        network.id,
        held.address,
        vm.id,
        tenant_id=held.tenant_id,
        mac_prefix=req.gateway.settings.network.mac_prefix,
    )
    await send_network_change(port, network.datacenter_id, network.id, "nic.added")
    return attached


@api.post(
    "/public-ips/{network_id}/{address}/detach",
    reply=IpAllocation,
    summary="Detach a public address from its VM (the tenant keeps it)",
    errors=(404,),
)
async def detach_public_ip(req: ApiRequest[None, None]) -> IpAllocation:
    network, held = await _public_held(req)
    assert held.tenant_id is not None
    port = await network_route(req.gateway.orchestrator, network.datacenter_id)  # 503 first
    detached = await req.gateway.store.attach_ip(
        network.id, held.address, None, tenant_id=held.tenant_id
    )
    await send_network_change(port, network.datacenter_id, network.id, "nic.removed")
    return detached
