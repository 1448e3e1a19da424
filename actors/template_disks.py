"""The disk of a VM deployed from a template: a qcow2 linked clone of the template's qcow2 file.

The clone (``qemu-img create -f qcow2 -b BASE -F qcow2``) holds only what the VM writes; the
template's file in the library is its read-only base and is never changed or removed while a
clone uses it (a template delete is refused, naming the VMs). Clones live in the template's
repository under ``clones/<base sha256>/<vm id>.qcow2``: the repository is the datacenter's
shared directory (NFS in production), so every host of the datacenter opens the same path and
no per-host copy of the base is made yet. The clone is grown to the VM's ``disk_gib`` when that
is larger than the template's virtual size.
"""

from __future__ import annotations

import asyncio
import os

from cloudcore.errors import IllegalTransition, UnsupportedOperation
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import VM, Template
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.types import Capability, FileDisk

__all__ = ["TemplateDisks"]

_log = get_logger("actors.template_disks")
_GIB = 1024**3


class TemplateDisks:
    """Makes and removes VMs' linked clones."""

    def __init__(self, store: Store, library: ImageLibrary, qemu: QemuImg) -> None:
        self._store = store
        self.library = library
        self._qemu = qemu

    async def disk_for(self, vm: VM, driver: HypervisorDriver | None = None) -> FileDisk | None:
        """The boot disk of ``vm``: its clone, made if missing (idempotent, so a resumed deploy
        reuses it); on a driver that imports images (vSphere), a copy of the template's file in
        the driver's ``image_format`` on the host's storage. None for a VM without a template.
        IllegalTransition if the template lacks that format (convert it first)."""
        if vm.spec.template_id is None:
            return None
        template = await self._store.get(Template, vm.spec.template_id)
        if driver is not None and driver.supports(Capability.IMPORT_IMAGE):
            return await self._imported(vm, template, driver)
        if driver is not None and driver.image_format != "qcow2":
            raise UnsupportedOperation(
                f"the {driver.name or type(driver).__name__} driver cannot receive a template's "
                "image: deploy from a template on libvirt, vSphere or XenServer"
            )
        base_sha = template.formats.get("qcow2")
        if base_sha is None:
            have = ", ".join(sorted(template.formats)) or "no image"
            raise IllegalTransition(
                f"template {template.id} has no qcow2 image ({have}): convert it to qcow2 first"
            )
        repo = self.library.repository(template.datacenter_id)
        clone = repo.clone_path(base_sha, vm.id)
        if not await asyncio.to_thread(clone.exists):
            await asyncio.to_thread(clone.parent.mkdir, parents=True, exist_ok=True)
            partial = clone.with_suffix(".partial")
            size = max(vm.spec.disk_gib * _GIB, template.virtual_size)
            await self._qemu.create_clone(repo.object_path(base_sha), partial, size=size)
            await asyncio.to_thread(os.replace, partial, clone)  # whole or not at all
            _log.info("vm.disk_cloned", vm_id=vm.id, template_id=template.id, base=base_sha)
        return FileDisk(path=str(clone), format="qcow2")

    async def _imported(self, vm: VM, template: Template, driver: HypervisorDriver) -> FileDisk:
        fmt = driver.image_format
        sha = template.formats.get(fmt)
        if sha is None:
            have = ", ".join(sorted(template.formats)) or "no image"
            raise IllegalTransition(
                f"template {template.id} has no {fmt} image ({have}): convert it to {fmt} first"
            )
        path = self.library.repository(template.datacenter_id).object_path(sha)
        disk = await driver.import_image(str(path), _disk_name(vm))
        _log.info("vm.disk_imported", vm_id=vm.id, template_id=template.id, format=fmt)
        return disk

    async def remove(self, vm: VM, driver: HypervisorDriver | None = None) -> None:
        """Remove ``vm``'s clone (or its imported copy), if it has one; never the template's
        file."""
        if vm.spec.template_id is None:
            return
        if driver is not None and driver.supports(Capability.IMPORT_IMAGE):
            await driver.remove_image(_disk_name(vm))
            return
        try:
            template = await self._store.get(Template, vm.spec.template_id)
        except LookupError:
            return  # a template cannot go while a clone uses it; nothing to find
        base_sha = template.formats.get("qcow2")
        if base_sha is None:
            return
        clone = self.library.repository(template.datacenter_id).clone_path(base_sha, vm.id)
        await asyncio.to_thread(clone.unlink, missing_ok=True)


def _disk_name(vm: VM) -> str:
    return f"cc-{vm.id}"
