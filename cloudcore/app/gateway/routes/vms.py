"""VMs: create (202 and a task), get, list with filters and cursor pages, the power and
lifecycle actions (each 202 and a task), delete."""

from __future__ import annotations

from typing import Any

import msgspec

from actors.messages import Snapshot
from actors.operations import (
    DeleteParams,
    DeleteSnapshotParams,
    MigrateParams,
    OperationParams,
    PauseParams,
    RebootParams,
    ReconfigureParams,
    ResumeParams,
    RevertSnapshotParams,
    SnapshotName,
    SnapshotParams,
    StartParams,
    StopParams,
    SuspendParams,
)
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import Principal, require, tenant_filter
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.listing import NEWEST_FIRST, sorted_page
from cloudcore.app.gateway.lookup import referenced, visible
from cloudcore.app.gateway.routes.tasks import RecoverBody
from cloudcore.app.gateway.schemas import (
    HABody,
    MigrateBody,
    RebootBody,
    ReconfigureBody,
    SnapshotBody,
    StopBody,
    TaskView,
    TombstoneQuery,
    VMCreate,
    VMQuery,
)
from cloudcore.app.gateway.tasks import accepted, task_view
from cloudcore.errors import Conflict, InvalidRecord, NotFound
from cloudcore.store import Store
from cloudcore.store.listing import Not
from cloudcore.store.records import (
    VM,
    BootVolume,
    Datacenter,
    NicRequest,
    Page,
    Role,
    Task,
    Template,
    Tenant,
    VMSpec,
    VMState,
    Volume,
    VolumeState,
)

__all__ = ["api"]

api = Api("vms")


async def visible_vm(req: ApiRequest[Any, Any], *, tombstone: bool = False) -> VM:
    """The VM named in the path, if the caller may see it and it is not deleted (else 404, as
    for a missing one). ``tombstone``: a deleted one too."""
    vm = await visible(req, VM, req.params["vm_id"], "VM")
    if vm.state is VMState.DELETED and not tombstone:
        raise NotFound(f"VM {vm.id} not found")
    return vm


def _owner(principal: Principal, requested: str | None) -> str:
    if requested is None or requested == principal.tenant_id:
        return principal.tenant_id
    if not principal.sees_all:
        raise ApiError(403, "forbidden", "only admins and operators create VMs for another tenant")
    return requested


@api.post(
    "/vms",
    body=VMCreate,
    reply=TaskView,
    status=202,
    summary="Create a VM (and deploy it)",
    errors=(403, 404, 409),
)
async def create_vm(req: ApiRequest[VMCreate, None]) -> Reply:
    """Checks the tenant's quotas (409 quota_exceeded naming the resource) and holds the
    addresses of its ``nics`` (422 naming ``nics[i].network_id`` for a network the tenant may
    not use, 409 naming the holder of a taken address) and its ``boot_volume`` (404, 422 or
    409 naming what is wrong with it), then answers 202
    with the deploy task; its Location header is the task. Follow it, or the VM's events.
    With an ``Idempotency-Key`` the VM, its task and the key are written in one transaction:
    the same key again answers with that task, even after a crash cut the first answer off."""
    body, store = req.body, req.gateway.store
    tenant_id = _owner(req.principal, body.tenant_id)
    if tenant_id != req.principal.tenant_id:
        await referenced(store, Tenant, tenant_id, "tenant_id", "tenant")
    await referenced(store, Datacenter, body.datacenter_id, "datacenter_id", "datacenter")
    boot = await _boot_volume(store, body, tenant_id)
    if body.template_id is not None:
        template = await referenced(store, Template, body.template_id, "template_id", "template")
        if template.tenant_id not in (None, tenant_id):  # another tenant's: as if none
            raise InvalidRecord(f"template_id: no template {body.template_id!r}")
        _check_template_minima(body, template)
    _check_maxima(body)
    spec = VMSpec(
        cpus=body.cpus,
        memory_mib=body.memory_mib,
        disk_gib=body.disk_gib,
        template_id=body.template_id,
        network_ids=tuple(body.network_ids),
        nics=tuple(NicRequest(network_id=n.network_id, address=n.address) for n in body.nics),
        max_cpus=body.max_cpus,
        max_memory_mib=body.max_memory_mib,
        ha=body.ha,
        ha_priority=body.ha_priority,
        boot_volume=boot,
    )
    task = await req.gateway.orchestrator.deploy(
        tenant_id=tenant_id,
        datacenter_id=body.datacenter_id,
        name=body.name,
        spec=spec,
        start=body.start,
        claim=req.idempotency,
        mac_prefix=req.gateway.settings.network.mac_prefix,
    )
    return await accepted(req, task)


async def _boot_volume(store: Store, body: VMCreate, tenant_id: str) -> BootVolume | None:
    """The volume the VM boots from, checked before anything is written: the tenant's (404,
    as for a missing one), in the VM's datacenter (422), AVAILABLE (409 naming its state)."""
    asked = body.boot_volume
    if asked is None:
        return None
    if body.template_id is not None:
        raise InvalidRecord(
            "boot_volume: a VM boots from a template or from a volume, not both "
            f"(template_id {body.template_id!r} given too)"
        )
    try:
        volume = await store.get(Volume, asked.volume_id)
    except NotFound:
        volume = None
    if volume is None or volume.tenant_id != tenant_id or volume.state is VolumeState.DELETED:
        raise NotFound(f"boot_volume.volume_id: no volume {asked.volume_id!r}")
    if volume.datacenter_id != body.datacenter_id:
        raise InvalidRecord(
            f"boot_volume.volume_id: volume {volume.id} is in datacenter "
            f"{volume.datacenter_id}, the VM in {body.datacenter_id}"
        )
    if volume.state is not VolumeState.AVAILABLE or volume.task_id is not None:
        holder = f" to VM {volume.vm_id}" if volume.vm_id else ""
        raise Conflict(
            f"boot_volume.volume_id: volume {volume.id} is {volume.state}{holder}; "
            "a VM boots from an AVAILABLE volume"
        )
    return BootVolume(volume_id=volume.id, delete_on_termination=asked.delete_on_termination)


def _check_template_minima(body: VMCreate, template: Template) -> None:
    """A VM made from a template has at least the CPUs and memory the template asks for."""
    if body.cpus < template.min_cpus:
        raise InvalidRecord(
            f"cpus: template {template.id} needs at least {template.min_cpus}, got {body.cpus}"
        )
    if body.memory_mib < template.min_memory_mib:
        raise InvalidRecord(
            f"memory_mib: template {template.id} needs at least {template.min_memory_mib} MiB, "
            f"got {body.memory_mib}"
        )


def _check_maxima(body: VMCreate) -> None:
    for field, maximum, size in (
        ("max_cpus", body.max_cpus, body.cpus),
        ("max_memory_mib", body.max_memory_mib, body.memory_mib),
    ):
        if maximum is not None and maximum < size:
            raise InvalidRecord(f"{field}: {maximum} is below the VM's size {size}")


@api.get("/vms", query=VMQuery, reply=Page[VM], summary="List VMs")
async def list_vms(req: ApiRequest[None, VMQuery]) -> Page[VM]:
    """The newest first unless ``sort`` says otherwise, a page at a time, filters applied
    before the limit. Deleted VMs are left out unless ``deleted`` (or ``state=DELETED``). A
    user sees its own tenant's VMs only."""
    q = req.query
    where = tenant_filter(req.principal, q.tenant_id)
    if where is None:
        return Page(items=[], total=0)
    for key in ("datacenter_id", "host_id", "state", "name"):
        value = getattr(q, key)
        if value is not None:
            where[key] = value
    if q.state is None and not q.deleted:
        where["state"] = Not(VMState.DELETED)
    return await sorted_page(req.gateway.store, VM, where, q)


@api.get("/vms/{vm_id}", query=TombstoneQuery, reply=VM, summary="Get a VM", errors=(404,))
async def get_vm(req: ApiRequest[None, TombstoneQuery]) -> VM:
    """A deleted VM is a 404 as a missing one is; admins and operators read its tombstone
    with ``deleted=true``."""
    return await visible_vm(req, tombstone=req.query.deleted and req.principal.sees_all)


async def _operate(
    req: ApiRequest[Any, Any], params: OperationParams, vm: VM | None = None
) -> Reply:
    vm = vm or await visible_vm(req)
    task = await req.gateway.orchestrator.operate(vm.id, params.operation, params)
    return await accepted(req, task)


_ACTION = {"reply": TaskView, "status": 202, "errors": (404, 409)}


@api.post("/vms/{vm_id}/start", summary="Power a VM on", **_ACTION)
async def start_vm(req: ApiRequest[None, None]) -> Reply:
    return await _operate(req, StartParams())


@api.post("/vms/{vm_id}/stop", body=StopBody, summary="Power a VM off", **_ACTION)
async def stop_vm(req: ApiRequest[StopBody, None]) -> Reply:
    """Graceful (ACPI) with a hard power-off when the timeout passes; ``hard`` at once."""
    return await _operate(req, StopParams(timeout=0.0 if req.body.hard else req.body.timeout))


@api.post("/vms/{vm_id}/reboot", body=RebootBody, summary="Reboot a VM", **_ACTION)
async def reboot_vm(req: ApiRequest[RebootBody, None]) -> Reply:
    return await _operate(req, RebootParams(hard=req.body.hard))


@api.post("/vms/{vm_id}/pause", summary="Pause a VM (in memory)", **_ACTION)
async def pause_vm(req: ApiRequest[None, None]) -> Reply:
    return await _operate(req, PauseParams())


@api.post("/vms/{vm_id}/resume", summary="Resume a paused or suspended VM", **_ACTION)
async def resume_vm(req: ApiRequest[None, None]) -> Reply:
    return await _operate(req, ResumeParams())


@api.post("/vms/{vm_id}/suspend", summary="Suspend a VM (to disk)", **_ACTION)
async def suspend_vm(req: ApiRequest[None, None]) -> Reply:
    return await _operate(req, SuspendParams())


@api.post("/vms/{vm_id}/reconfigure", body=ReconfigureBody, summary="Resize a VM", **_ACTION)
async def reconfigure_vm(req: ApiRequest[ReconfigureBody, None]) -> Reply:
    body = req.body
    if body.cpus is None and body.memory_mib is None:
        raise InvalidRecord("give cpus, memory_mib or both")
    return await _operate(req, ReconfigureParams(cpus=body.cpus, memory_mib=body.memory_mib))


@api.post("/vms/{vm_id}/snapshot", body=SnapshotBody, summary="Snapshot a VM", **_ACTION)
async def snapshot_vm(req: ApiRequest[SnapshotBody, None]) -> Reply:
    return await _operate(req, SnapshotParams(name=req.body.name))


@api.get(
    "/vms/{vm_id}/snapshots",
    reply=list[Snapshot],
    summary="List a VM's snapshots",
    errors=(404, 409),
)
async def list_snapshots(req: ApiRequest[None, None]) -> list[Snapshot]:
    """As its hypervisor has them, oldest first (409 ``unsupported_operation`` for a driver
    without snapshots)."""
    return await req.gateway.orchestrator.snapshots(await visible_vm(req))


#: A snapshot's name in the path is checked as at its creation: 422 naming ``name``.
_SNAPSHOT_ACTION = {**_ACTION, "errors": (404, 409, 422)}


@api.post(
    "/vms/{vm_id}/snapshots/{name}/revert",
    summary="Revert a VM to a snapshot",
    **_SNAPSHOT_ACTION,
)
async def revert_snapshot(req: ApiRequest[None, None]) -> Reply:
    """Disks, memory and power as they were when it was taken (404 for a name it has not)."""
    return await _operate(req, RevertSnapshotParams(name=_snapshot_name(req)))


@api.delete("/vms/{vm_id}/snapshots/{name}", summary="Delete a snapshot", **_SNAPSHOT_ACTION)
async def delete_snapshot(req: ApiRequest[None, None]) -> Reply:
    return await _operate(req, DeleteSnapshotParams(name=_snapshot_name(req)))


def _snapshot_name(req: ApiRequest[Any, Any]) -> str:
    try:
        return msgspec.convert(req.params["name"], SnapshotName)
    except msgspec.ValidationError as exc:
        raise InvalidRecord(f"name: {exc}") from None


@api.post("/vms/{vm_id}/migrate", body=MigrateBody, summary="Move a VM to another host", **_ACTION)
async def migrate_vm(req: ApiRequest[MigrateBody, None]) -> Reply:
    return await _operate(req, MigrateParams(host_id=req.body.host_id, deadline=req.body.deadline))


@api.post(
    "/vms/{vm_id}/ha",
    body=HABody,
    reply=VM,
    summary="Set whether a VM is restarted elsewhere when its host fails",
    errors=(403, 404, 409),
)
async def set_ha(req: ApiRequest[HABody, None]) -> VM:
    """Changes ``spec.ha`` and ``spec.ha_priority`` at once (no task); 409 while an
    operation runs on the VM."""
    vm = await visible_vm(req)
    return await req.gateway.orchestrator.set_ha(vm.id, req.body.ha, req.body.priority)


@api.post(
    "/vms/{vm_id}/recover",
    body=RecoverBody,
    reply=TaskView,
    status=202,
    summary="Recover a VM in ERROR",
    errors=(403, 404, 409),
)
async def recover_vm(req: ApiRequest[RecoverBody, None]) -> Reply:
    """As ``POST /tasks/{id}/recover`` for the VM's last task, by VM (admins and operators):
    ``retry`` and ``delete`` answer 202 with the task that does it; ``succeed`` and ``fail``
    answer 200 with the VM's last task, settled."""
    vm = await visible_vm(req)
    require(req.principal, Role.ADMIN, Role.OPERATOR)
    store = req.gateway.store
    follow = await req.gateway.orchestrator.recover(vm.id, req.body.verb)
    if follow is not None:
        return await accepted(req, follow)
    last = await store.list(Task, where={"subject": f"vm/{vm.id}"}, limit=1, order=NEWEST_FIRST)
    return Reply(await task_view(store, last.items[0]), 200)


@api.delete("/vms/{vm_id}", summary="Delete a VM", **_ACTION)
async def delete_vm(req: ApiRequest[None, None]) -> Reply:
    """Detaches the VM's volumes (each kept AVAILABLE, or deleted if it was attached with
    ``delete_on_termination``), destroys the VM on its host, releases its capacity and quota;
    202 and the task. 409 ``already_deleted`` for a VM already deleted."""
    vm = await visible_vm(req, tombstone=True)
    if vm.state is VMState.DELETED:
        raise ApiError(409, "already_deleted", f"VM {vm.id} is already deleted")
    return await _operate(req, DeleteParams(), vm)
