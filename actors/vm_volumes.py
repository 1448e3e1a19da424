"""What a VM's delete does with its volumes, before the hypervisor destroys the VM: each volume
attached to it is detached by its Volume actor (the same detach task as ``POST .../detach``), and
those attached with ``delete_on_termination`` are then deleted (their quota given back in the
transaction that marks them DELETED). Each step is journaled in the VM's delete task.

Crash safety: the VM is marked DELETED only after every step here succeeded, so no volume stays
ATTACHED to a DELETED VM. A delete cut short leaves the VM in the state its hypervisor shows and
its task FAILED; the next delete finds what is still attached, and the volumes the cut-short one
meant to delete (recorded in its ``volumes`` step) that are detached but not yet deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from actors.journal import Journal
from actors.operations import DeleteParams, OperationParams
from actors.services import Services
from actors.volume_messages import (
    Activate,
    AttachParams,
    DeleteVolumeParams,
    DetachParams,
    RequestVolumeOperation,
    VolumeParams,
)
from cloudcore.errors import Conflict, NotFound
from cloudcore.runtime import ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import VM, Task, TaskState, Volume, VolumeState

__all__ = ["before", "delete_volume", "detach", "flagged", "operate", "release_volumes", "settled"]

#: Volume states no operation holds.
_SETTLED = frozenset({VolumeState.AVAILABLE, VolumeState.ATTACHED, VolumeState.ERROR})


async def before(
    services: Services, system: ActorSystem, vm: VM, journal: Journal, params: OperationParams
) -> None:
    """The VM operation's volume work: for a delete, release its volumes; else nothing."""
    if isinstance(params, DeleteParams):
        await release_volumes(services, system, vm, journal)


async def release_volumes(
    services: Services, system: ActorSystem, vm: VM, journal: Journal
) -> None:
    store = services.store
    attached = [v.id for v in await _volumes_of(store, vm.id)]
    doomed = set(await _doomed_before(store, vm.id, journal.task.id))
    for volume_id in attached:
        if await flagged(store, volume_id):
            doomed.add(volume_id)
    deadline = services.settings.step_deadline * 4

    async def plan() -> None:
        return None

    await journal.step(
        "volumes",
        plan,
        deadline=deadline,
        data={"detach": attached, "delete": sorted(doomed)},
    )
    for volume_id in attached:
        await journal.step(
            "detach_volume",
            lambda v=volume_id: detach(services, system, v, vm.id),  # type: ignore[misc]
            deadline=deadline,
            data={"volume_id": volume_id},
        )
    for volume_id in sorted(doomed):
        await journal.step(
            "delete_volume",
            lambda v=volume_id: delete_volume(services, system, v),  # type: ignore[misc]
            deadline=deadline,
            data={"volume_id": volume_id},
        )


async def flagged(store: Store, volume_id: str) -> bool:
    """Whether the volume's last successful attach asked ``delete_on_termination``."""
    page = await store.list(Task, where={"subject": f"volume/{volume_id}"}, limit=1000)
    for task in reversed(page.items):  # ids sort by creation: the last attach first
        if task.kind == "volume.attach" and task.state is TaskState.SUCCEEDED:
            params = msgspec.convert(task.data["params"], AttachParams)
            return params.delete_on_termination
    return False


async def _volumes_of(store: Store, vm_id: str) -> list[Volume]:
    page = await store.list(Volume, where={"vm_id": vm_id}, limit=1000)
    return [v for v in page.items if v.state is not VolumeState.DELETED]


async def _doomed_before(store: Store, vm_id: str, task_id: str) -> Iterable[str]:
    """The volumes earlier (cut-short or failed) deletes of this VM meant to delete."""
    page = await store.list(Task, where={"subject": f"vm/{vm_id}"}, limit=1000)
    found: list[str] = []
    for task in page.items:
        if task.kind != "vm.delete" or task.id == task_id:
            continue
        for step in await store.list_steps(task.id):
            if step.name == "volumes":
                found.extend(str(v) for v in step.data.get("delete", []))
    return found


async def settled(services: Services, system: ActorSystem, volume_id: str) -> Volume | None:
    """The volume once no operation holds it (its actor started, so a task a crash cut short
    resumes); None if it is gone."""
    try:
        volume = await services.store.get(Volume, volume_id)
    except NotFound:
        return None
    if volume.state is VolumeState.DELETED:
        return None
    await _ref(system, volume).ask(Activate(volume_id=volume.id))
    volume = await services.store.get(Volume, volume_id)
    if volume.state not in _SETTLED and volume.task_id is not None:
        await services.waiters.wait(
            services.store, volume.task_id, services.settings.step_deadline * 3
        )
        volume = await services.store.get(Volume, volume_id)
    return None if volume.state is VolumeState.DELETED else volume


def _ref(system: ActorSystem, volume: Volume) -> Any:
    if volume.pool_id is None:
        raise NotFound(f"volume {volume.id} is on no storage pool")
    return system.lookup(f"/user/storage/{volume.pool_id}")


async def operate(
    services: Services, system: ActorSystem, volume: Volume, params: VolumeParams
) -> None:
    ref = await _ref(system, volume).ask(Activate(volume_id=volume.id))
    task: Task = await ref.ask(RequestVolumeOperation(params=params))
    done = await services.waiters.wait(services.store, task.id, services.settings.step_deadline * 3)
    if done.state is not TaskState.SUCCEEDED:
        raise Conflict(f"volume {volume.id}: {params.operation} failed: {done.error}")


async def detach(services: Services, system: ActorSystem, volume_id: str, vm_id: str) -> None:
    volume = await settled(services, system, volume_id)
    if volume is None or volume.vm_id != vm_id:  # detached already
        return
    await operate(services, system, volume, DetachParams())


async def delete_volume(services: Services, system: ActorSystem, volume_id: str) -> None:
    volume = await settled(services, system, volume_id)
    if volume is None:
        return
    if volume.vm_id is not None:  # attached again since (to another VM): no longer ours to delete
        return
    await operate(services, system, volume, DeleteVolumeParams())
