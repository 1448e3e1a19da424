"""The disk of a VM deployed from a template: a qcow2 linked clone of the template's qcow2 file.

The clone (``qemu-img create -f qcow2 -b BASE -F qcow2``) holds only what the VM writes. Its
base is the VM's host's copy of the template's library file (:mod:`cloudcore.images.host_cache`):
made once per host, on the first deploy there (concurrent deploys wait for that one copy),
checked against the file's size and sha256, and shared by every clone of the host. A clone
lives in the cache of the host the VM was first defined on, ``clones/<base sha256>/<vm
id>.qcow2``, and stays there when the VM migrates or is restarted on another host (every host
of this machine reads every host's directory; in production clones would need storage every
host of the datacenter mounts). A template whose file a clone uses cannot be deleted (refused,
naming the VMs); a base no clone of its host uses is evicted when its template is deleted, or
by a sweep (:meth:`TemplateDisks.sweep`, at a node's start). Clones made before the caches
existed, in the repository's ``clones/``, are still found, used and removed. The clone is
grown to the VM's ``disk_gib`` when that is larger than the template's virtual size.

A template that lacks the format the host's driver needs is converted first, on demand, by the
converter of the VM's datacenter (:mod:`actors.converter`): the deploy asks it for the
conversion, joins the one under way if another deploy asked first (one conversion for any
number of deploys), and waits for its task; a failed conversion fails the deploy naming the
task and its error.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from actors.conversion import Convert
from actors.journal import TaskWaiters
from cloudcore.config import ImagesSettings
from cloudcore.errors import AlreadyExists, DriverError, IllegalTransition, UnsupportedOperation
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorRef
from cloudcore.store import Store
from cloudcore.store.records import VM, TaskState, Template
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.types import Capability, FileDisk

__all__ = ["TemplateDisks"]

_log = get_logger("actors.template_disks")
_GIB = 1024**3


class TemplateDisks:
    """Makes and removes VMs' linked clones; knows the converters of the datacenters running
    in this process (each registers itself)."""

    def __init__(
        self,
        store: Store,
        library: ImageLibrary,
        qemu: QemuImg,
        settings: ImagesSettings | None = None,
        waiters: TaskWaiters | None = None,
    ) -> None:
        self._store = store
        self.library = library
        self.qemu = qemu
        self.settings = settings or ImagesSettings()
        self.waiters = waiters or TaskWaiters()
        #: datacenter id -> its converter actor (``actors.converter``), while it runs here.
        self.converters: dict[str, ActorRef[Any]] = {}

    async def with_format(self, template: Template, fmt: str, datacenter_id: str) -> Template:
        """``template`` once it has ``fmt``: converted by ``datacenter_id``'s converter if it
        lacks it (the conversion under way joined). IllegalTransition if no converter runs here
        for that datacenter or the template's state allows no conversion; DriverError naming
        the task if the conversion fails."""
        while fmt not in template.formats:
            converter = self.converters.get(datacenter_id)
            if converter is None or not template.formats:
                have = ", ".join(sorted(template.formats)) or "no image"
                why = "" if template.formats else f", {template.state.name}"
                raise IllegalTransition(
                    f"template {template.id} has no {fmt} image ({have}{why}): "
                    f"convert it to {fmt} first"
                )
            try:
                task = await converter.ask(Convert(template_id=template.id, format=fmt))
            except AlreadyExists:  # converted meanwhile
                template = await self._store.get(Template, template.id)
                continue
            _log.info("vm.disk_waits_conversion", template_id=template.id, task_id=task.id)
            done = await self._ended(task.id)
            template = await self._store.get(Template, template.id)
            if done.state is not TaskState.SUCCEEDED and fmt not in template.formats:
                raise DriverError(
                    f"template {template.id} could not be converted to {fmt}: task {done.id} "
                    f"{done.state.name}: {done.error or 'no reason given'}",
                    code="conversion",
                )
        return template

    async def _ended(self, task_id: str) -> Any:
        """The task once it ends; the store read again every second (it may end on another
        node, whose journal resolves no waiter of this process)."""
        async with asyncio.timeout(self.settings.convert_deadline * 3):
            while True:
                try:
                    return await self.waiters.wait(self._store, task_id, timeout=1.0)
                except TimeoutError:
                    continue

    async def disk_for(self, vm: VM, driver: HypervisorDriver | None = None) -> FileDisk | None:
        """The boot disk of ``vm``: its clone, made if missing (idempotent, so a resumed deploy
        reuses it); on a driver that imports images (vSphere), a copy of the template's file in
        the driver's ``image_format`` on the host's storage. None for a VM without a template.
        IllegalTransition if the template lacks that format (convert it first)."""
        if vm.spec.template_id is None:
            return None
        template = await self._store.get(Template, vm.spec.template_id)
        importing = driver is not None and driver.supports(Capability.IMPORT_IMAGE)
        if driver is not None and not importing and driver.image_format != "qcow2":
            raise UnsupportedOperation(
                f"the {driver.name or type(driver).__name__} driver cannot receive a template's "
                "image: deploy from a template on libvirt, vSphere, XenServer or Hyper-V"
            )
        fmt = driver.image_format if driver is not None and importing else "qcow2"
        if fmt not in template.formats:
            template = await self.with_format(template, fmt, vm.datacenter_id)
        if driver is not None and importing:
            return await self._imported(vm, template, driver)
        return await self._cloned(vm, template, template.formats["qcow2"])

    async def _cloned(self, vm: VM, template: Template, base_sha: str) -> FileDisk:
        if vm.host_id is None:
            raise IllegalTransition(f"vm {vm.id} has no host: its disk is made on its host")
        repo = self.library.repository(template.datacenter_id)
        old = repo.clone_path(base_sha, vm.id)  # from before the caches
        made = [old] if await asyncio.to_thread(old.exists) else []
        made += await self.library.clones_of(base_sha, vm.id)
        if made:  # a resumed deploy's, or the disk it had on the host it left
            return FileDisk(path=str(made[0]), format="qcow2")
        cache = self.library.host_cache(vm.host_id)
        clone = cache.clone_path(base_sha, vm.id)
        source = repo.object_path(base_sha)
        length = (await asyncio.to_thread(source.stat)).st_size
        async with cache.base(base_sha, source, length) as base:
            await asyncio.to_thread(clone.parent.mkdir, parents=True, exist_ok=True)
            partial = clone.with_suffix(".partial")
            size = max(vm.spec.disk_gib * _GIB, template.virtual_size)
            await self.qemu.create_clone(base, partial, size=size)
            await asyncio.to_thread(os.replace, partial, clone)  # whole or not at all
        _log.info(
            "vm.disk_cloned", vm_id=vm.id, template_id=template.id, base=base_sha, host=vm.host_id
        )
        return FileDisk(path=str(clone), format="qcow2")

    async def sweep(self) -> dict[str, list[str]]:
        """Evict from every host's cache the bases no clone uses (host id -> sha256s)."""
        removed = await self.library.sweep()
        for host, shas in removed.items():
            _log.info("image.bases_evicted", host=host, bases=shas)
        return removed

    async def _imported(self, vm: VM, template: Template, driver: HypervisorDriver) -> FileDisk:
        fmt = driver.image_format
        sha = template.formats[fmt]
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
        # The repository's (from before the caches), and in whichever host's cache: a VM that
        # migrated or was restarted elsewhere keeps the clone made on its first host.
        clones = [self.library.repository(template.datacenter_id).clone_path(base_sha, vm.id)]
        clones += await self.library.clones_of(base_sha, vm.id)
        for clone in clones:
            await asyncio.to_thread(clone.unlink, missing_ok=True)


def _disk_name(vm: VM) -> str:
    return f"cc-{vm.id}"
