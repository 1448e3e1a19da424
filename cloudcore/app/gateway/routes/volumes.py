"""Volumes: create (202 and a task), get, list with filters and cursor pages, extend, attach
to a VM, detach, snapshots, delete (each 202 and a task); storage pools and their drift for
admins and operators. Tenancy as for VMs: another tenant's volume is a 404."""

from __future__ import annotations

from typing import Any

from actors.storage import Drift, StorageService
from actors.volume_messages import (
    AttachParams,
    DeleteSnapshotParams,
    DeleteVolumeParams,
    DetachParams,
    ExtendParams,
    SnapshotVolumeParams,
    VolumeParams,
)
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import require, tenant_filter
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.listing import sorted_page
from cloudcore.app.gateway.lookup import referenced, visible
from cloudcore.app.gateway.schemas import ListQuery, TaskView
from cloudcore.app.gateway.tasks import accepted
from cloudcore.app.gateway.volume_schemas import (
    AttachBody,
    ExtendBody,
    PoolView,
    RecoverBody,
    SnapshotCreate,
    VolumeCreate,
    VolumeQuery,
)
from cloudcore.errors import InvalidRecord, NotFound
from cloudcore.store.listing import Not
from cloudcore.store.records import (
    Datacenter,
    Page,
    Role,
    Task,
    Tenant,
    Volume,
    VolumeSnapshot,
    VolumeState,
    new_id,
)

__all__ = ["api"]

api = Api("volumes")
_INFRA = (Role.ADMIN, Role.OPERATOR)
_ACTION = {"reply": TaskView, "status": 202, "errors": (404, 409, 422)}


def _storage(req: ApiRequest[Any, Any]) -> StorageService:
    storage = req.gateway.orchestrator.storage
    if storage is None:
        raise ApiError(503, "unavailable", "this node runs no storage pools")
    return storage


async def visible_volume(req: ApiRequest[Any, Any]) -> Volume:
    """The volume in the path, if the caller may see it (else 404, as for a missing one)."""
    volume = await visible(req, Volume, req.params["volume_id"], "volume", shared=False)
    if volume.state == "DELETED":
        raise NotFound(f"volume {volume.id} not found")
    return volume


@api.post(
    "/volumes",
    body=VolumeCreate,
    reply=TaskView,
    status=202,
    summary="Create a volume",
    errors=(403, 409, 422),
)
async def create_volume(req: ApiRequest[VolumeCreate, None]) -> Reply:
    """Places the volume on a pool of its tier with room (409 insufficient capacity), takes the
    tenant's ``volumes`` and ``volume_gib`` quotas in the transaction that writes it (409
    quota_exceeded naming the resource), and answers 202 with the create task."""
    body, store = req.body, req.gateway.store
    tenant_id = req.principal.tenant_id
    if body.tenant_id not in (None, tenant_id):
        if not req.principal.sees_all:
            raise ApiError(403, "forbidden", "only admins and operators create for another tenant")
        tenant_id = body.tenant_id
        await referenced(store, Tenant, tenant_id, "tenant_id", "tenant")
    await referenced(store, Datacenter, body.datacenter_id, "datacenter_id", "datacenter")
    source = await _source(req, body, tenant_id)
    size = body.size_gib if body.size_gib is not None else getattr(source, "size_gib", None)
    if size is None:
        raise InvalidRecord("size_gib: required for an empty volume")
    task = await _storage(req).create_volume(
        tenant_id=tenant_id,
        datacenter_id=body.datacenter_id,
        name=body.name,
        size_gib=size,
        tier=body.tier,
        claim=req.idempotency,
        source=source,
    )
    return await accepted(req, task)


async def _source(
    req: ApiRequest[Any, Any], body: VolumeCreate, tenant_id: str
) -> Volume | VolumeSnapshot | None:
    """The snapshot or volume a new volume copies, if the tenant owns it (else, as for one
    that does not exist, a 422 naming the field)."""
    if body.snapshot_id is not None and body.source_volume_id is not None:
        raise InvalidRecord("source_volume_id: give a snapshot_id or a source_volume_id, not both")
    kind: type[Volume] | type[VolumeSnapshot]
    if body.snapshot_id is not None:
        kind, field, wanted = VolumeSnapshot, "snapshot_id", body.snapshot_id
    elif body.source_volume_id is not None:
        kind, field, wanted = Volume, "source_volume_id", body.source_volume_id
    else:
        return None
    try:
        found = await req.gateway.store.get(kind, wanted)
    except NotFound:
        found = None
    if found is None or found.tenant_id != tenant_id or getattr(found, "state", "") == "DELETED":
        raise InvalidRecord(f"{field}: no {'snapshot' if kind is VolumeSnapshot else 'volume'} "
                            f"{wanted!r}")  # fmt: skip
    if getattr(found, "datacenter_id", body.datacenter_id) != body.datacenter_id:
        raise InvalidRecord(f"{field}: volume {wanted} is in another datacenter")
    return found


@api.get("/volumes", query=VolumeQuery, reply=Page[Volume], summary="List volumes")
async def list_volumes(req: ApiRequest[None, VolumeQuery]) -> Page[Volume]:
    """The newest first unless ``sort`` says otherwise, a page at a time, counted; deleted ones
    only when ``state=DELETED``."""
    q = req.query
    where = tenant_filter(req.principal, q.tenant_id)
    if where is None:
        return Page(items=[], total=0)
    where["state"] = Not(VolumeState.DELETED)
    for key in ("datacenter_id", "vm_id", "state", "name"):
        if (value := getattr(q, key)) is not None:
            where[key] = value
    return await sorted_page(req.gateway.store, Volume, where, q)


@api.get("/volumes/{volume_id}", reply=Volume, summary="Get a volume", errors=(404,))
async def get_volume(req: ApiRequest[None, None]) -> Volume:
    return await visible_volume(req)


async def _operate(req: ApiRequest[Any, Any], params: VolumeParams) -> Reply:
    volume = await visible_volume(req)
    task: Task = await _storage(req).operate(volume.id, params)
    return await accepted(req, task)


@api.delete("/volumes/{volume_id}", summary="Delete a volume", **_ACTION)
async def delete_volume(req: ApiRequest[None, None]) -> Reply:
    """Unexports and deletes it, gives its quota back. 409 while attached or with snapshots."""
    return await _operate(req, DeleteVolumeParams())


@api.post("/volumes/{volume_id}/extend", body=ExtendBody, summary="Grow a volume", **_ACTION)
async def extend_volume(req: ApiRequest[ExtendBody, None]) -> Reply:
    """Takes the growth's ``volume_gib`` quota at once; a failed extend gives it back."""
    return await _operate(req, ExtendParams(size_gib=req.body.size_gib))


@api.post(
    "/volumes/{volume_id}/attach", body=AttachBody, summary="Attach a volume to a VM", **_ACTION
)
async def attach_volume(req: ApiRequest[AttachBody, None]) -> Reply:
    """Exports the volume to the VM's host (CHAP, that host's initiator only), then the
    hypervisor attaches it: hot to a running VM, in the definition of a stopped one. With
    ``delete_on_termination`` the VM's delete deletes the volume too (else detaches it)."""
    body = req.body
    params = AttachParams(vm_id=body.vm_id, delete_on_termination=body.delete_on_termination)
    return await _operate(req, params)


@api.post("/volumes/{volume_id}/detach", summary="Detach a volume from its VM", **_ACTION)
async def detach_volume(req: ApiRequest[None, None]) -> Reply:
    return await _operate(req, DetachParams())


@api.post(
    "/volumes/{volume_id}/snapshots",
    body=SnapshotCreate,
    summary="Snapshot a volume",
    **_ACTION,
)
async def snapshot_volume(req: ApiRequest[SnapshotCreate, None]) -> Reply:
    """The snapshot's id is in the task's data (``params.snapshot_id``)."""
    snapshot_id = new_id("snap-")
    return await _operate(req, SnapshotVolumeParams(snapshot_id=snapshot_id, name=req.body.name))


@api.get(
    "/volumes/{volume_id}/snapshots",
    query=ListQuery,
    reply=Page[VolumeSnapshot],
    summary="List a volume's snapshots",
    errors=(404,),
)
async def list_snapshots(req: ApiRequest[None, ListQuery]) -> Page[VolumeSnapshot]:
    volume = await visible_volume(req)
    q = req.query
    return await req.gateway.store.list(
        VolumeSnapshot, where={"volume_id": volume.id}, after=q.cursor, limit=q.limit
    )


@api.delete("/volumes/{volume_id}/snapshots/{snapshot_id}", summary="Delete a snapshot", **_ACTION)
async def delete_snapshot(req: ApiRequest[None, None]) -> Reply:
    return await _operate(req, DeleteSnapshotParams(snapshot_id=req.params["snapshot_id"]))


@api.post(
    "/volumes/{volume_id}/recover",
    body=RecoverBody,
    reply=Volume,
    summary="Recover a volume in ERROR (admin, operator)",
    errors=(403, 404, 409),
)
async def recover_volume(req: ApiRequest[RecoverBody, None]) -> Any:
    """``retry`` runs its failed create or delete again and ``delete`` deletes it (202 and the
    task); ``succeed`` and ``fail`` settle it (the volume)."""
    require(req.principal, *_INFRA)
    volume = await visible_volume(req)
    result = await _storage(req).recover(volume.id, req.body.verb)
    if isinstance(result, Task):
        return await accepted(req, result)
    return result


@api.get(
    "/storage-pools",
    reply=list[PoolView],
    summary="List storage pools (admin, operator)",
    errors=(403,),
)
async def list_pools(req: ApiRequest[None, None]) -> list[PoolView]:
    require(req.principal, *_INFRA)
    return [
        PoolView(**{f: getattr(s, f) for f in PoolView.__struct_fields__})
        for s in await _storage(req).pool_status()
    ]


@api.get(
    "/storage-pools/drift",
    reply=list[Drift],
    summary="Compare the store with the storage backends (admin, operator)",
    errors=(403,),
)
async def storage_drift(req: ApiRequest[None, None]) -> list[Drift]:
    """Orphans (on a backend, unknown to the store) and what is missing, reported only."""
    require(req.principal, *_INFRA)
    return await _storage(req).reconcile()
