"""A VM's NICs as the store keeps them: each a MAC (made from ``network.mac_prefix``) and an
address of a network, allocated in one transaction; removed, the address rests in quarantine.
Deleting the VM releases them all.

NICs a VM is created with (``POST /vms`` ``nics``) are defined on its hypervisor; one added here
later is the record the network's DHCP server serves, not yet hot-plugged into a running guest
(the drivers' ``HOTPLUG_NIC`` has no task driving it yet; see the README, Networks). A change is
written with its event, then the node that owns the VM's datacenter is called to reload the
network's DHCP configuration (:mod:`actors.routed_services`; 503 before writing if it is down)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from actors.routed_services import network_route, send_network_change
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.lookup import visible
from cloudcore.errors import InvalidRecord, NotFound
from cloudcore.store.records import VM, IpAllocation, Network, OutboxEvent, VMState

__all__ = ["NicAdd", "api"]

api = Api("nics")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class NicAdd(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A NIC on ``network_id`` (the VM's tenant's private network, or a public one), with
    ``address`` if given (409 naming its holder when taken), else a free one."""

    network_id: _Id
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


async def _vm(req: ApiRequest[Any, Any]) -> VM:
    vm = await visible(req, VM, req.params["vm_id"], "VM")
    if vm.state in (VMState.DELETING, VMState.DELETED):
        raise ApiError(409, "conflict", f"VM {vm.id} is {vm.state.value}")
    return vm


def _event(kind: str, vm: VM, nic: IpAllocation) -> OutboxEvent:
    data = {"network_id": nic.network_id, "address": nic.address, "mac": nic.mac}
    return OutboxEvent(type=kind, subject=f"vm/{vm.id}", tenant_id=vm.tenant_id, data=data)


@api.post(
    "/vms/{vm_id}/nics",
    body=NicAdd,
    reply=IpAllocation,
    status=201,
    summary="Add a NIC to a VM, with an address of a network",
    errors=(404, 409),
)
async def add_nic(req: ApiRequest[NicAdd, None]) -> Reply:
    """422 naming ``network_id`` for a network the VM's tenant may not use (as for one that
    does not exist) and ``address`` for one outside the network's ranges; 409
    ``addresses_exhausted``, ``already_exists`` naming the holder, ``quota_exceeded`` (an
    address of a public network counts against ``public_ips``)."""
    vm, body, store = await _vm(req), req.body, req.gateway.store
    missing = InvalidRecord(f"network_id: no network {body.network_id!r}")
    try:
        network = await store.get(Network, body.network_id)
    except NotFound:
        raise missing from None
    if network.tenant_id not in (None, vm.tenant_id) or network.datacenter_id != vm.datacenter_id:
        raise missing
    port = await network_route(req.gateway.orchestrator, network.datacenter_id)  # 503 first
    added = OutboxEvent(  # the store adds the address and MAC it gives
        type="nic.added",
        subject=f"vm/{vm.id}",
        tenant_id=vm.tenant_id,
        data={"network_id": network.id},
    )
    nic = await store.allocate_ip(
        network.id,
        body.address,
        vm_id=vm.id,
        tenant_id=vm.tenant_id,
        mac_prefix=req.gateway.settings.network.mac_prefix,
        events=[added],
    )
    await send_network_change(port, network.datacenter_id, network.id, "nic.added")
    return Reply(nic, 201, {"Location": f"/api/v1/vms/{vm.id}/nics/{nic.mac}"})


@api.get(
    "/vms/{vm_id}/nics",
    reply=list[IpAllocation],
    summary="List a VM's NICs and their addresses",
    errors=(404,),
)
async def list_nics(req: ApiRequest[None, None]) -> list[IpAllocation]:
    vm = await visible(req, VM, req.params["vm_id"], "VM")
    return await req.gateway.store.list_ips(vm_id=vm.id)


@api.delete(
    "/vms/{vm_id}/nics/{mac}",
    status=204,
    summary="Remove a VM's NIC; its address rests in quarantine",
    errors=(404, 409),
)
async def remove_nic(req: ApiRequest[None, None]) -> Reply:
    vm, mac = await _vm(req), req.params["mac"].lower()
    store = req.gateway.store
    nics = [n for n in await store.list_ips(vm_id=vm.id) if n.mac == mac]
    if not nics:
        raise NotFound(f"VM {vm.id} has no NIC {mac}")
    nic = nics[0]
    port = await network_route(req.gateway.orchestrator, vm.datacenter_id)  # 503 first
    await store.release_ip(nic.network_id, nic.address, events=[_event("nic.removed", vm, nic)])
    await send_network_change(port, vm.datacenter_id, nic.network_id, "nic.removed")
    return Reply(None, 204)
