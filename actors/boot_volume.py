"""The boot volume of a VM deployed from one (``VMSpec.boot_volume``), instead of a template.

The deploy defines the domain as for any VM, then this step has the volume attached to it by
the volume's own attach task (:mod:`actors.volume_work`): exported to the initiator of the host
the VM was placed on, then attached, persistently, to the defined (not yet running) domain as
an iSCSI disk with boot order 1 (the libvirt driver drops the domain's ``<os><boot>``, which
libvirt refuses beside a per-device order); then the deploy starts it. The attach carries the
request's ``delete_on_termination``, so the VM's delete (:mod:`actors.vm_volumes`) detaches the
volume and keeps or deletes it like any other.

Each step is idempotent: a deploy resumed after a crash finds the volume still attaching (its
task is resumed and waited for), available (attached now), or attached to the VM already: then
it is detached and attached again, because the resumed deploy defined the domain again (as its
spec says, without the volume), and the hypervisor must hold the disk when the VM starts.

A boot volume that cannot be attached fails the define: the step first lets go of what it
holds (detaches the volume from this VM if it got that far), then the deploy rolls the domain
back and places the VM again, so a rescheduled VM never finds its volume held by the host it
left.
"""

from __future__ import annotations

from actors import vm_volumes
from actors.journal import Journal
from actors.services import Services
from actors.volume_messages import AttachParams, DetachParams
from cloudcore.errors import Conflict, NotFound, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorSystem
from cloudcore.store.records import VM, BootVolume, VolumeState

__all__ = ["attach"]

_log = get_logger("actors.boot_volume")


async def attach(services: Services, system: ActorSystem, vm: VM, journal: Journal) -> None:
    """Have ``vm``'s boot volume attached to it (nothing for a VM without one)."""
    boot = vm.spec.boot_volume
    if boot is None:
        return
    try:
        await journal.step(
            "boot_volume",
            lambda: _attached(services, system, vm, boot),
            deadline=services.settings.step_deadline * 4,
            data={"volume_id": boot.volume_id},
        )
    except Exception as exc:
        try:
            await vm_volumes.detach(services, system, boot.volume_id, vm.id)
        except Exception as undo:  # left attached: the VM's delete or the reconciler finds it
            _log.error(
                "vm.boot_volume_not_released",
                vm_id=vm.id,
                volume_id=boot.volume_id,
                error=describe(undo),
                cause=describe(exc),
            )
        raise


async def _attached(services: Services, system: ActorSystem, vm: VM, boot: BootVolume) -> None:
    volume = await vm_volumes.settled(services, system, boot.volume_id)
    if volume is None:
        raise NotFound(f"boot volume {boot.volume_id} of VM {vm.id} is deleted")
    if volume.state is VolumeState.ATTACHED and volume.vm_id == vm.id:
        # A resumed deploy: attached before the crash, but the define run again since gave the
        # hypervisor the domain as the spec has it, without the disk: attach it afresh.
        await vm_volumes.operate(services, system, volume, DetachParams())
        volume = await vm_volumes.settled(services, system, boot.volume_id)
        if volume is None:
            raise NotFound(f"boot volume {boot.volume_id} of VM {vm.id} is deleted")
    if volume.state is not VolumeState.AVAILABLE:
        holder = f" to VM {volume.vm_id}" if volume.vm_id else ""
        raise Conflict(
            f"boot volume {volume.id} of VM {vm.id} is {volume.state}{holder}: "
            "a VM boots from an AVAILABLE volume"
        )
    params = AttachParams(vm_id=vm.id, delete_on_termination=boot.delete_on_termination)
    await vm_volumes.operate(services, system, volume, params)
    _log.info("vm.boot_volume_attached", vm_id=vm.id, volume_id=volume.id)
