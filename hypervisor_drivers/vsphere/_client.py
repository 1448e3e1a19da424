"""Blocking vSphere calls for one ESXi host, one method per driver operation. Runs in worker
threads, never on the event loop. Returns only cloudcore values; pyvmomi faults are translated by
the driver's caller (``_errors.call_translated``) except where a method looks at one itself.

VMs are found by their ``instanceUuid``, which cloudcore sets to its own uuid (and the BIOS uuid
too) when it creates a VM; a VM on another host of the same vCenter is not found here.
"""

from __future__ import annotations

from typing import Any

import structlog
from pyVmomi import vim, vmodl

from cloudcore.errors import Conflict, IllegalTransition, NotFound, UnsupportedOperation
from hypervisor_drivers.types import (
    DiskSpec,
    DomainSpec,
    DriverSettings,
    FileDisk,
    GuestPower,
    HostCapacity,
    HostInventory,
    NicInfo,
    NicSpec,
    SnapshotInfo,
    VMInfo,
)
from hypervisor_drivers.vsphere import _snapshots, _specs
from hypervisor_drivers.vsphere._connection import Session, session_key
from hypervisor_drivers.vsphere._inventory import HostRefs, find_host, vm_props, wait_task
from hypervisor_drivers.vsphere._power import POWER, power_of, require_power

__all__ = ["HostClient"]


_log = structlog.get_logger("hypervisor_drivers.vsphere")
# The guest cannot be asked to reboot (no VMware Tools; vcsim has no RebootGuest): reset it,
# as OpenStack's VMware driver does.
_NO_GUEST_REBOOT = (
    vim.fault.ToolsUnavailable,
    vmodl.fault.MethodNotFound,
    vmodl.fault.NotSupported,
)


class HostClient:
    """The operations of one driver on its ESXi host, over a shared vCenter session."""

    def __init__(self, session: Session, settings: DriverSettings) -> None:
        self.session = session
        self.refs: HostRefs = find_host(session.content, settings.extra)

    @property
    def content(self) -> Any:
        return self.session.content

    def _wait(self, task: Any) -> Any:
        return wait_task(self.session.content, task)

    # -- host ----------------------------------------------------------------------------------

    def inventory(self) -> HostInventory:
        host = self.refs.host
        product = host.config.product if host.config else None
        hardware = host.summary.hardware
        about = self.session.content.about
        version = product.version if product else about.version
        return HostInventory(
            hostname=host.name,
            hypervisor_type=product.name if product else "VMware ESXi",
            hypervisor_version=_three_part(version),
            cpu_model=hardware.cpuModel or "",
            cpus=hardware.numCpuThreads,
            memory_kib=hardware.memorySize // 1024,
            extra={
                "vcenter": about.fullName,
                "datacenter": self.refs.datacenter.name,
                "datastore": self.refs.datastore_name,
                "mhz": str(hardware.cpuMhz),
                "moref": host._moId,
            },
        )

    def capacity(self) -> HostCapacity:
        hardware = self.refs.host.summary.hardware
        vcpus = memory_mib = running = 0
        for props in vm_props(self.session.content, self.refs.host):
            if str(props.get("runtime.powerState")) == "poweredOn":
                vcpus += props.get("config.hardware.numCPU", 0)
                memory_mib += props.get("config.hardware.memoryMB", 0)
                running += 1
        stats = self.refs.host.summary.quickStats
        used = getattr(stats, "overallMemoryUsage", None)
        total_kib = hardware.memorySize // 1024
        return HostCapacity(
            cpus=hardware.numCpuThreads,
            memory_kib=total_kib,
            allocated_vcpus=vcpus,
            allocated_memory_kib=memory_mib * 1024,
            running_vms=running,
            free_memory_kib=total_kib - used * 1024 if used else None,
        )

    # -- reading VMs ---------------------------------------------------------------------------

    def list_vms(self) -> list[VMInfo]:
        # runtime.host guards against a stale host.vm (vcsim keeps a relocated VM there).
        return [
            _vm_info(p)
            for p in vm_props(self.session.content, self.refs.host)
            if p.get("config.instanceUuid")  # a VM being created has no config yet
            and p.get("runtime.host") == self.refs.host
        ]

    def locate(self, uuid: str) -> tuple[Any, GuestPower] | None:
        """The VM with this uuid on this host and its power state (read in the same call as
        its host: the state checks cost no round trip of their own), or None."""
        vm = self.session.content.searchIndex.FindByUuid(
            self.refs.datacenter, uuid, vmSearch=True, instanceUuid=True
        )
        if vm is None:
            return None
        try:
            runtime = vm.runtime
        except vmodl.fault.ManagedObjectNotFound:
            return None  # destroyed meanwhile
        return (vm, power_of(runtime)) if runtime.host == self.refs.host else None

    def find(self, uuid: str) -> Any | None:
        """The VM with this uuid on this host, or None."""
        found = self.locate(uuid)
        return found[0] if found is not None else None

    def located(self, uuid: str) -> tuple[Any, GuestPower]:
        found = self.locate(uuid)
        if found is None:
            raise NotFound(f"no VM {uuid} on host {self.refs.host_name}")
        return found

    def vm(self, uuid: str) -> Any:
        return self.located(uuid)[0]

    def get_vm(self, uuid: str) -> VMInfo:
        props = vm_props(self.session.content, self.vm(uuid), single=True)
        if not props:
            raise NotFound(f"no VM {uuid} on host {self.refs.host_name}")
        return _vm_info(props[0])

    def power(self, uuid: str) -> GuestPower:
        return self.located(uuid)[1]

    # -- lifecycle -----------------------------------------------------------------------------

    def define(self, spec: DomainSpec) -> VMInfo:
        if any(not isinstance(d, FileDisk) for d in spec.disks):
            raise UnsupportedOperation("the vSphere driver takes datastore file disks only")
        for nic in spec.nics:
            name = nic.name_on(_specs.PORTGROUP)
            if name not in {n.name for n in self.refs.host.network}:
                raise NotFound(f"no network {name!r} on host {self.refs.host_name}")
        # vcsim drops the connection of a FindChild while another CreateVM_Task has put its
        # still nameless VM in the folder: the read is retried (see _transport).
        named = self.session.content.searchIndex.FindChild(self.refs.vm_folder, spec.name)
        if named is not None and named.config.instanceUuid != spec.uuid:
            raise Conflict(f"another VM is named {spec.name!r}")
        existing = self.find(spec.uuid)
        if existing is not None:
            facts = _specs.vm_facts(existing.config)
            self._wait(existing.ReconfigVM_Task(_specs.redefine_spec(spec, facts)))
            return self.get_vm(spec.uuid)
        if named is not None:
            raise Conflict(f"VM {spec.uuid} exists on another host than {self.refs.host_name}")
        config = _specs.config_spec(spec, self.refs.datastore_name)
        created = self._wait(
            self.refs.vm_folder.CreateVM_Task(
                config=config, pool=self.refs.pool, host=self.refs.host
            )
        )
        props = vm_props(self.session.content, created, single=True)  # the task's result
        return _vm_info(props[0]) if props else self.get_vm(spec.uuid)

    def start(self, uuid: str) -> None:
        vm, power = self.located(uuid)
        require_power(uuid, power, {GuestPower.RUNNING, GuestPower.STOPPED}, "start")
        if power is GuestPower.STOPPED:
            try:
                self._wait(vm.PowerOnVM_Task())
            except vim.fault.InvalidPowerState:
                if power_of(vm.runtime) is not GuestPower.RUNNING:
                    raise  # else it was started meanwhile: done all the same

    def hard_stop(self, uuid: str) -> bool:
        """Power off at once; False when it was already off. A suspended VM is refused (its
        saved state would be lost): ``destroy`` discards it."""
        vm, power = self.located(uuid)
        if power is GuestPower.STOPPED:
            return False
        if power is GuestPower.SUSPENDED:
            raise IllegalTransition(f"VM {uuid} is suspended; destroy it to discard its state")
        return self._power_off(vm)

    def request_shutdown(self, uuid: str) -> None:
        self.vm(uuid).ShutdownGuest()

    def power_off(self, uuid: str) -> None:
        self._power_off(self.vm(uuid))

    def _power_off(self, vm: Any) -> bool:
        """Power ``vm`` off; False when it was off already (found so by the fault, not by a
        read beforehand)."""
        try:
            self._wait(vm.PowerOffVM_Task())
        except vim.fault.InvalidPowerState:
            if power_of(vm.runtime) is not GuestPower.STOPPED:
                raise
            return False  # it stopped meanwhile
        return True

    def reboot(self, uuid: str, hard: bool) -> None:
        vm, power = self.located(uuid)
        require_power(uuid, power, {GuestPower.RUNNING}, "reboot")
        if not hard:
            try:
                vm.RebootGuest()
                return
            except _NO_GUEST_REBOOT as exc:
                _log.warning("hypervisor.reboot_forced", vm=uuid, reason=type(exc).__name__)
        self._wait(vm.ResetVM_Task())

    def suspend(self, uuid: str) -> None:
        vm, power = self.located(uuid)
        require_power(uuid, power, {GuestPower.RUNNING, GuestPower.SUSPENDED}, "suspend")
        if power is GuestPower.RUNNING:
            self._wait(vm.SuspendVM_Task())

    def resume(self, uuid: str) -> None:
        vm, power = self.located(uuid)
        require_power(uuid, power, {GuestPower.RUNNING, GuestPower.SUSPENDED}, "resume")
        if power is GuestPower.SUSPENDED:
            self._wait(vm.PowerOnVM_Task())

    def destroy(self, uuid: str) -> None:
        found = self.locate(uuid)
        if found is None:
            return
        vm, power = found
        try:
            if power is not GuestPower.STOPPED:
                self._power_off(vm)  # a suspended VM powers off too, discarding its state
            # Detach the disks first: Destroy_Task deletes the files of attached disks, and
            # volumes belong to the storage drivers.
            disks = [
                _specs.disk_remove(d)
                for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualDisk)
            ]
            if disks:
                self._wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=disks)))
            self._wait(vm.Destroy_Task())
        except vmodl.fault.ManagedObjectNotFound:
            return  # destroyed meanwhile

    def migrate(self, uuid: str, destination: DriverSettings) -> None:
        key, _password = session_key(destination)
        if key != self.session.key:
            raise UnsupportedOperation(
                "vSphere migration is within one vCenter (same URI, user and TLS settings)"
            )
        target = find_host(self.session.content, destination.extra)
        if target.host == self.refs.host:
            return
        vm = self.vm(uuid)
        spec = vim.vm.RelocateSpec(host=target.host, pool=target.pool)
        if target.datastore not in vm.datastore:
            spec.datastore = target.datastore  # not shared with the target: move the files too
        self._wait(vm.RelocateVM_Task(spec))

    # -- changes -------------------------------------------------------------------------------

    def reconfigure(self, uuid: str, vcpus: int | None, memory_mib: int | None) -> VMInfo:
        vm, power = self.located(uuid)
        require_power(uuid, power, {GuestPower.STOPPED, GuestPower.RUNNING}, "reconfigure")
        facts = _specs.vm_facts(vm.config)
        change = vim.vm.ConfigSpec(numCPUs=vcpus, memoryMB=memory_mib)
        if power is GuestPower.RUNNING:
            if (vcpus or 0) > facts.max_vcpus or (memory_mib or 0) > facts.max_memory_mib:
                raise IllegalTransition(
                    f"VM {uuid} is running and the change exceeds its maxima "
                    f"({facts.max_vcpus} vCPUs, {facts.max_memory_mib} MiB); stop it first"
                )
        else:
            max_vcpus = max(facts.max_vcpus, vcpus or 0)
            max_memory = max(facts.max_memory_mib, memory_mib or 0)
            change.extraConfig = [
                vim.option.OptionValue(key=_specs.MAX_VCPUS, value=str(max_vcpus)),
                vim.option.OptionValue(key=_specs.MAX_MEMORY, value=str(max_memory)),
            ]
        self._wait(vm.ReconfigVM_Task(change))
        return self.get_vm(uuid)

    # -- snapshots -----------------------------------------------------------------------------

    def create_snapshot(self, uuid: str, name: str) -> SnapshotInfo:
        return _snapshots.create(self.content, self.vm(uuid), name)

    def list_snapshots(self, uuid: str) -> list[SnapshotInfo]:
        return _snapshots.listed(self.content, self.vm(uuid))

    def revert_snapshot(self, uuid: str, name: str) -> None:
        _snapshots.revert(self.content, self.vm(uuid), name)

    def delete_snapshot(self, uuid: str, name: str) -> None:
        _snapshots.delete(self.content, self.vm(uuid), name)

    # -- volumes -------------------------------------------------------------------------------

    def attach(self, uuid: str, disk: DiskSpec) -> str:
        if not isinstance(disk, FileDisk):  # an iSCSI LUN needs the host's initiator
            raise UnsupportedOperation("vSphere attaches file disks (VMDKs) only")
        vm = self.vm(uuid)
        assert disk.serial is not None
        facts = _specs.vm_facts(vm.config)
        if disk.serial in facts.disks:
            return _device_name(facts, facts.disks[disk.serial])
        if facts.controller is None:
            raise UnsupportedOperation(f"VM {uuid} has no SCSI controller to attach disks to")
        unit = _specs.free_unit(facts)
        change = vim.vm.ConfigSpec(
            deviceChange=[_specs.disk_add(disk, facts.controller.key, unit)],
            extraConfig=[
                vim.option.OptionValue(key=_specs.DISK_PREFIX + disk.serial, value=disk.path)
            ],
        )
        self._wait(vm.ReconfigVM_Task(change))
        return f"scsi{facts.controller.busNumber}:{unit}"

    def detach(self, uuid: str, serial: str) -> None:
        vm = self.vm(uuid)
        facts = _specs.vm_facts(vm.config)
        device = facts.disks.get(serial)
        if device is None:
            return
        change = vim.vm.ConfigSpec(
            deviceChange=[_specs.disk_remove(device)],
            extraConfig=[vim.option.OptionValue(key=_specs.DISK_PREFIX + serial, value="")],
        )
        self._wait(vm.ReconfigVM_Task(change))

    # -- NICs ----------------------------------------------------------------------------------

    def list_nics(self, uuid: str) -> list[NicInfo]:
        devices = _specs.nic_devices(self.vm(uuid).config)
        return [
            NicInfo(mac=str(d.macAddress or "").lower(), source=_specs.nic_source(d))
            for d in devices
        ]

    def attach_nic(self, uuid: str, nic: NicSpec) -> None:
        vm = self.vm(uuid)
        macs = {str(d.macAddress or "").lower() for d in _specs.nic_devices(vm.config)}
        if (nic.mac or "").lower() not in macs:
            change = vim.vm.ConfigSpec(deviceChange=[_specs.nic_add(nic)])
            self._wait(vm.ReconfigVM_Task(change))

    def detach_nic(self, uuid: str, mac: str) -> None:
        vm = self.vm(uuid)
        for device in _specs.nic_devices(vm.config):
            if str(device.macAddress or "").lower() == mac.lower():
                change = vim.vm.ConfigSpec(deviceChange=[_specs.nic_remove(device)])
                self._wait(vm.ReconfigVM_Task(change))
                return


def _device_name(facts: _specs.VmFacts, device: Any) -> str:
    bus = facts.controller.busNumber if facts.controller is not None else 0
    return f"scsi{bus}:{device.unitNumber}"


def _three_part(version: str) -> str:
    parts = ([*version.split("."), "0", "0", "0"])[:3]
    return ".".join(p or "0" for p in parts)


def _vm_info(props: dict[str, Any]) -> VMInfo:
    return VMInfo(
        uuid=props["config.instanceUuid"],
        name=props["name"],
        power=POWER.get(str(props.get("runtime.powerState")), GuestPower.UNKNOWN),
        vcpus=props.get("config.hardware.numCPU", 0),
        memory_mib=props.get("config.hardware.memoryMB", 0),
    )
