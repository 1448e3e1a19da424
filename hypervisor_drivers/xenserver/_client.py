"""Blocking XAPI calls, one method per driver operation. Runs in the driver's single worker
thread (an ``XenAPI.Session`` is one XML-RPC connection: not for concurrent use), never on the
event loop. XAPI failures are translated by the caller (``_errors.call_translated``) except where
a method needs to look at one itself.

XAPI chooses a VM's uuid itself, so a VM cloudcore defines carries the orchestrator's uuid in
``other_config["cloudcore_uuid"]``; lookups go through a uuid -> ref cache refreshed on a miss.
``XenAPI.Session`` logs in again by itself when a call meets ``SESSION_INVALID``.

Power calls are optimistic: they go straight to XAPI with the cached ref and read XAPI's refusal
(``VM_BAD_POWER_STATE [vm, expected, actual]``) for the idempotent outcome, instead of reading the
state first: one call where a check-first client makes two or three. The one call that cannot
be optimistic is a hard stop, because XAPI's ``hard_shutdown`` also discards a suspended VM,
which the base spec refuses: it skips the look only when this client's last change left the VM
running or paused (``_seen``) and no event has reported another state since (``forget``).
Quick calls (start, hard stop, pause) are synchronous; long ones (suspend, resume, reboot,
migration, snapshots, a clean shutdown) go through ``Async.*`` tasks, which outlive the
per-call socket timeout and can be cancelled.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
import XenAPI

from cloudcore.errors import (
    Conflict,
    DriverError,
    IllegalTransition,
    NotFound,
    UnsupportedOperation,
)
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
    StopOutcome,
    VMInfo,
)
from hypervisor_drivers.xenserver import _nics
from hypervisor_drivers.xenserver import _records as rec
from hypervisor_drivers.xenserver._errors import failure_code

__all__ = ["XenClient"]

_T = TypeVar("_T")
_OFF = (GuestPower.STOPPED, GuestPower.CRASHED)

_log = structlog.get_logger("hypervisor_drivers.xenserver")
MiB = 1024 * 1024
SERIAL_KEY = "cloudcore_serial"
_TASK_POLL = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)  # then every 0.25 s


class XenClient:
    """One XAPI session to the pool master, acting for one host of the pool."""

    def __init__(self, settings: DriverSettings) -> None:
        self.settings = settings
        self.session = rec.open_session(settings, "cloudcore")
        try:
            self.x = self.session.xenapi
            pool = self.x.pool.get_all()[0]
            self.master = self.x.pool.get_master(pool)
            self.host = self._host_ref(settings.extra.get("host"))
            self.sr = self._sr_ref(settings.extra.get("sr"), pool)
        except BaseException:
            self.close()
            raise
        self._refs: dict[str, str] = {}
        self._seen: dict[str, GuestPower] = {}  # uuid -> power our last change left it in

    def _host_ref(self, name: str | None) -> str:
        if name is None:
            return str(self.master)
        for ref, host in self.x.host.get_all_records().items():
            if name in (host["name_label"], host["uuid"], host.get("hostname")):
                return str(ref)
        raise NotFound(f"the XenServer pool has no host named {name!r}")

    def _sr_ref(self, name: str | None, pool: str) -> str:
        if name is None:
            local = self.x.host.get_record(self.host).get("local_sr")
            return str(local or self.x.pool.get_default_SR(pool))
        for ref, sr in self.x.SR.get_all_records().items():
            if name in (sr["name_label"], sr["uuid"]):
                return str(ref)
        raise NotFound(f"the XenServer pool has no SR named {name!r}")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the session may be gone with the server
            self.session.xenapi.session.logout()

    # -- host ----------------------------------------------------------------------------------

    def inventory(self) -> HostInventory:
        host = self.x.host.get_record(self.host)
        metrics = self.x.host_metrics.get_record(host["metrics"])
        software = host.get("software_version") or {}
        cpu = host.get("cpu_info") or {}
        return HostInventory(
            hostname=str(host.get("hostname") or host["name_label"]),
            hypervisor_type=str(software.get("product_brand", "XenServer")),
            hypervisor_version=str(software.get("product_version", "0.0.0")),
            cpu_model=str(cpu.get("modelname", "")),
            cpus=rec.integer(cpu, "cpu_count"),
            memory_kib=rec.integer(metrics, "memory_total") // 1024,
            extra={
                "host_uuid": str(host["uuid"]),
                "pool_master": str(self.host == self.master).lower(),
                "api_version": f"{host['API_version_major']}.{host['API_version_minor']}",
            },
        )

    def capacity(self) -> HostCapacity:
        host = self.x.host.get_record(self.host)
        metrics = self.x.host_metrics.get_record(host["metrics"])
        vcpus = memory = running = 0
        for vm in self._guests().values():
            if rec.power(vm) in (GuestPower.RUNNING, GuestPower.PAUSED):
                vcpus += rec.integer(vm, "VCPUs_at_startup")
                memory += rec.integer(vm, "memory_dynamic_max") // 1024
                running += 1
        return HostCapacity(
            cpus=rec.integer(host.get("cpu_info") or {}, "cpu_count"),
            memory_kib=rec.integer(metrics, "memory_total") // 1024,
            allocated_vcpus=vcpus,
            allocated_memory_kib=memory,
            running_vms=running,
            free_memory_kib=rec.integer(metrics, "memory_free") // 1024,
        )

    # -- reading VMs ---------------------------------------------------------------------------

    def _guests(self) -> dict[str, dict[str, Any]]:
        records = self.x.VM.get_all_records()
        if not isinstance(records, dict):
            raise DriverError("malformed XAPI reply: VM.get_all_records is not a map")
        is_master = self.host == self.master
        guests = {ref: r for ref, r in records.items() if rec.belongs_to(r, self.host, is_master)}
        self._refs = {rec.vm_uuid(r): ref for ref, r in guests.items()}
        return guests

    def lookup(self, uuid: str) -> tuple[str, dict[str, Any]]:
        """The XAPI ref and record of the guest ``uuid`` names, on this host: one call when the
        ref is cached and still right, else a sweep. Raises ``NotFound``."""
        ref = self._refs.get(uuid)
        if ref is not None:
            try:
                record = self.x.VM.get_record(ref)
            except XenAPI.Failure as exc:
                if failure_code(exc) != "HANDLE_INVALID":
                    raise
            else:
                ours = rec.belongs_to(record, self.host, self.host == self.master)
                if ours and rec.vm_uuid(record) == uuid:
                    return ref, record
        for ref, record in self._guests().items():
            if rec.vm_uuid(record) == uuid:
                return ref, record
        raise NotFound(f"no VM {uuid} on XenServer host {self.settings.extra.get('host')}")

    def ref(self, uuid: str) -> str:
        return self.lookup(uuid)[0]

    def list_vms(self) -> list[VMInfo]:
        return [rec.vm_info(r) for r in self._guests().values()]

    def get_vm(self, uuid: str) -> VMInfo:
        return rec.vm_info(self.lookup(uuid)[1])

    def power(self, uuid: str) -> GuestPower:
        return rec.power(self.lookup(uuid)[1])

    # -- define --------------------------------------------------------------------------------

    def define(self, spec: DomainSpec) -> VMInfo:
        for ref in self.x.VM.get_by_name_label(spec.name):
            if rec.vm_uuid(self.x.VM.get_record(ref)) != spec.uuid:
                raise Conflict(f"another VM on the pool is named {spec.name!r}")
        vdis = [self._vdi(disk) for disk in spec.disks]
        networks = [_nics.network_ref(self.x, nic) for nic in spec.nics]
        try:
            ref = self.ref(spec.uuid)
        except NotFound:
            ref = self.x.VM.create(rec.vm_record(spec, self.host))
            self._refs[spec.uuid] = ref
        else:
            self._redefine(ref, spec)
        for index, (disk, vdi) in enumerate(zip(spec.disks, vdis, strict=True)):
            self._create_vbd(ref, vdi, index, disk)
        for index, (nic, network) in enumerate(zip(spec.nics, networks, strict=True)):
            self.x.VIF.create(_nics.vif_record(ref, network, index, nic))
        return rec.vm_info(self.x.VM.get_record(ref))

    def _redefine(self, ref: str, spec: DomainSpec) -> None:
        # XAPI has no "replace the definition": a halted VM takes the new sizes and devices.
        if self.x.VM.get_power_state(ref) != "Halted":
            raise IllegalTransition(f"VM {spec.uuid} must be halted to be redefined on XenServer")
        self.x.VM.set_name_label(ref, spec.name)
        self._resize_halted(ref, spec.vcpus, spec.memory_mib, spec.max_vcpus, spec.max_memory_mib)
        for vbd in self.x.VM.get_VBDs(ref):
            self.x.VBD.destroy(vbd)
        for vif in self.x.VM.get_VIFs(ref):
            self.x.VIF.destroy(vif)

    def _vdi(self, disk: DiskSpec) -> str:
        if not isinstance(disk, FileDisk):
            raise UnsupportedOperation("the xenserver driver takes disks as VDIs on an SR")
        for ref, vdi in self.x.VDI.get_all_records().items():
            names = (vdi["uuid"], vdi["name_label"], vdi.get("location"))
            if vdi.get("SR") == self.sr and disk.path in names and not vdi.get("is_a_snapshot"):
                return str(ref)
        raise NotFound(f"no VDI {disk.path!r} on the host's SR (uuid, name or location)")

    def _create_vbd(self, vm: str, vdi: str, slot: int, disk: DiskSpec) -> str:
        return str(
            self.x.VBD.create(
                {
                    "VM": vm,
                    "VDI": vdi,
                    "userdevice": str(slot),
                    "bootable": slot == 0,
                    "mode": "RO" if isinstance(disk, FileDisk) and disk.readonly else "RW",
                    "type": "Disk",
                    "empty": False,
                    "other_config": {SERIAL_KEY: disk.serial} if disk.serial else {},
                    "qos_algorithm_type": "",
                    "qos_algorithm_params": {},
                }
            )
        )

    # -- power ---------------------------------------------------------------------------------

    def state(self, uuid: str) -> tuple[str, GuestPower]:
        ref, record = self.lookup(uuid)
        return ref, rec.power(record)

    def run_task(self, task: str, deadline: float | None) -> None:
        """Wait for an ``Async.*`` task; cancel it at the deadline. Raises its failure."""
        pauses = iter(_TASK_POLL)
        try:
            while True:
                record = self.x.task.get_record(task)
                status = record["status"]
                if status == "success":
                    return
                if status in ("failure", "cancelled"):
                    raise XenAPI.Failure(record["error_info"] or ["TASK_CANCELLED", task])
                if deadline is not None and time.monotonic() >= deadline:
                    self.x.task.cancel(task)
                    deadline = None
                time.sleep(next(pauses, _TASK_POLL[-1]))
        finally:
            with contextlib.suppress(XenAPI.Failure):
                self.x.task.destroy(task)

    def forget(self, uuid: str, power: GuestPower | None) -> None:
        """An event saw ``uuid`` in ``power``: what this client saw is stale unless it agrees.
        Called from the event watcher's thread (a dict operation: atomic under the GIL)."""
        if self._seen.get(uuid) is not power:
            self._seen.pop(uuid, None)

    def _on_vm(self, uuid: str, call: Callable[[str], _T]) -> _T:
        """``call(ref)`` with the cached ref of ``uuid``; a ref XAPI no longer knows is looked up
        again once (``NotFound`` when the VM is gone)."""
        ref = self._refs.get(uuid)
        if ref is not None:
            try:
                return call(ref)
            except XenAPI.Failure as exc:
                if failure_code(exc) != "HANDLE_INVALID" or ref not in exc.details:
                    raise
                self._refs.pop(uuid, None)
        return call(self.ref(uuid))

    def _transition(
        self, uuid: str, verb: str, call: Callable[[str], object], to: GuestPower
    ) -> None:
        """Ask XAPI for a change to ``to``; a VM already there is a no-op, any other state it
        reports is an ``IllegalTransition`` naming it."""
        try:
            self._on_vm(uuid, call)
        except XenAPI.Failure as exc:
            actual = rec.refused_power(exc.details)
            if actual is None:
                raise
            if actual is not to:
                raise IllegalTransition(
                    f"cannot {verb} VM {uuid}: it is {actual.value} (XAPI VM_BAD_POWER_STATE)"
                ) from exc
        self._seen[uuid] = to

    def start(self, uuid: str) -> None:
        self._transition(
            uuid,
            "start",
            lambda ref: self.x.VM.start_on(ref, self.host, False, False),
            GuestPower.RUNNING,
        )

    def request_shutdown(self, uuid: str) -> str:
        """Start a clean shutdown and return its task; the caller polls and cancels."""
        self._seen.pop(uuid, None)  # it may stop by itself from now on
        return str(self._on_vm(uuid, self.x.Async.VM.clean_shutdown))

    def cancel_task(self, task: str) -> None:
        """Cancel (if still running) and destroy a task. Idempotent."""
        with contextlib.suppress(XenAPI.Failure):  # finished meanwhile
            self.x.task.cancel(task)
        with contextlib.suppress(XenAPI.Failure):  # destroyed already
            self.x.task.destroy(task)

    def power_off(self, uuid: str) -> StopOutcome:
        """Hard stop: ``ALREADY_STOPPED`` when halted, ``IllegalTransition`` when suspended."""
        if self._seen.get(uuid) not in (GuestPower.RUNNING, GuestPower.PAUSED):
            power = self.state(uuid)[1]  # hard_shutdown would discard a saved VM: look first
            if power in _OFF:
                return StopOutcome.ALREADY_STOPPED
            if power is GuestPower.SUSPENDED:
                raise IllegalTransition(f"VM {uuid} is suspended; destroy it to discard its state")
        try:
            self._on_vm(uuid, self.x.VM.hard_shutdown)
        except XenAPI.Failure as exc:
            actual = rec.refused_power(exc.details)
            if actual not in _OFF:
                raise
            self._seen[uuid] = GuestPower.STOPPED  # it stopped by itself meanwhile
            return StopOutcome.ALREADY_STOPPED
        self._seen[uuid] = GuestPower.STOPPED
        return StopOutcome.FORCED

    def reboot(self, uuid: str, hard: bool) -> None:
        call = self.x.Async.VM.hard_reboot if hard else self.x.Async.VM.clean_reboot
        # XAPI refuses anything but Running: VM_BAD_POWER_STATE, an IllegalTransition.
        self._on_vm(uuid, lambda ref: self.run_task(call(ref), None))

    def pause(self, uuid: str) -> None:
        self._transition(uuid, "pause", self.x.VM.pause, GuestPower.PAUSED)

    def unpause(self, uuid: str) -> None:
        self._transition(uuid, "unpause", self.x.VM.unpause, GuestPower.RUNNING)

    def suspend(self, uuid: str) -> None:
        def suspend(ref: str) -> None:
            try:
                self.run_task(self.x.Async.VM.suspend(ref), None)
            except XenAPI.Failure as exc:
                if rec.refused_power(exc.details) is not GuestPower.PAUSED:
                    raise
                self.x.VM.unpause(ref)  # XAPI suspends only a running VM
                self.run_task(self.x.Async.VM.suspend(ref), None)

        self._transition(uuid, "suspend", suspend, GuestPower.SUSPENDED)

    def resume(self, uuid: str) -> None:
        def resume(ref: str) -> None:
            self.run_task(self.x.Async.VM.resume_on(ref, self.host, False, False), None)

        self._transition(uuid, "resume", resume, GuestPower.RUNNING)

    def destroy(self, uuid: str) -> None:
        try:
            ref, power = self.state(uuid)
        except NotFound:
            return
        if power in (GuestPower.RUNNING, GuestPower.PAUSED, GuestPower.SUSPENDED):
            self.x.VM.hard_shutdown(ref)  # a saved VM is discarded with the VM
        for snapshot in self.x.VM.get_snapshots(ref):
            self._destroy_snapshot(snapshot)
        # VBDs and VIFs are the VM's own; the VDIs they reference belong to storage.
        for vbd in self.x.VM.get_VBDs(ref):
            self.x.VBD.destroy(vbd)
        for vif in self.x.VM.get_VIFs(ref):
            self.x.VIF.destroy(vif)
        self.x.VM.destroy(ref)
        self._refs.pop(uuid, None)
        self._seen.pop(uuid, None)

    def migrate(self, uuid: str, destination: DriverSettings, live: bool) -> None:
        if destination.uri.rstrip("/") != self.settings.uri.rstrip("/"):
            raise UnsupportedOperation("the xenserver driver migrates only inside its pool")
        target = self._host_ref(destination.extra.get("host"))
        ref, power = self.state(uuid)
        if power is GuestPower.RUNNING:
            self.run_task(
                self.x.Async.VM.pool_migrate(ref, target, {"live": str(live).lower()}), None
            )
        elif power is not GuestPower.STOPPED:
            raise IllegalTransition(f"cannot migrate VM {uuid}: it is {power.value}")
        self.x.VM.set_affinity(ref, target)  # where it starts next time
        self._refs.pop(uuid, None)
        self._seen.pop(uuid, None)

    # -- changes -------------------------------------------------------------------------------

    def _resize_halted(
        self,
        ref: str,
        vcpus: int | None,
        memory_mib: int | None,
        max_vcpus: int | None = None,
        max_memory_mib: int | None = None,
    ) -> None:
        record = self.x.VM.get_record(ref)
        if vcpus is not None:
            ceiling = max(max_vcpus or vcpus, vcpus)
            if ceiling > rec.integer(record, "VCPUs_max"):
                self.x.VM.set_VCPUs_max(ref, str(ceiling))
                self.x.VM.set_VCPUs_at_startup(ref, str(vcpus))
            else:
                self.x.VM.set_VCPUs_at_startup(ref, str(vcpus))
                self.x.VM.set_VCPUs_max(ref, str(ceiling))
        if memory_mib is not None:
            size = str(memory_mib * MiB)
            ceiling_mib = max(max_memory_mib or memory_mib, memory_mib)
            self.x.VM.set_memory_limits(ref, size, str(ceiling_mib * MiB), size, size)

    def reconfigure(self, uuid: str, vcpus: int | None, memory_mib: int | None) -> VMInfo:
        ref, power = self.state(uuid)
        if power is GuestPower.STOPPED:
            self._resize_halted(ref, vcpus, memory_mib)
            return rec.vm_info(self.x.VM.get_record(ref))
        if power is not GuestPower.RUNNING:
            raise IllegalTransition(f"VM {uuid} is {power.value}; XAPI resizes live only running")
        record = self.x.VM.get_record(ref)
        too_many = vcpus is not None and vcpus > rec.integer(record, "VCPUs_max")
        too_big = memory_mib is not None and memory_mib * MiB > rec.integer(
            record, "memory_static_max"
        )
        if too_many or too_big:
            raise IllegalTransition(f"VM {uuid} is running and the change exceeds its maxima")
        if vcpus is not None:
            self.x.VM.set_VCPUs_number_live(ref, str(vcpus))
        if memory_mib is not None:
            size = str(memory_mib * MiB)
            self.x.VM.set_memory_dynamic_range(ref, size, size)
        return rec.vm_info(self.x.VM.get_record(ref))

    # -- snapshots -----------------------------------------------------------------------------

    def _snapshots(self, ref: str) -> dict[str, dict[str, Any]]:
        return {s: self.x.VM.get_record(s) for s in self.x.VM.get_snapshots(ref)}

    def create_snapshot(self, uuid: str, name: str) -> SnapshotInfo:
        ref, power = self.state(uuid)
        if any(s["name_label"] == name for s in self._snapshots(ref).values()):
            raise Conflict(f"VM {uuid} already has a snapshot named {name!r}")
        take = (
            self.x.Async.VM.checkpoint if power is GuestPower.RUNNING else self.x.Async.VM.snapshot
        )
        task = take(ref, name)  # a running VM is checkpointed: memory too
        self.run_task(task, None)
        snapshot = next(s for s, r in self._snapshots(ref).items() if r["name_label"] == name)
        self.x.VM.add_to_other_config(snapshot, rec.SNAPSHOT_SEQ_KEY, str(time.time_ns()))
        return rec.snapshot_info(self.x.VM.get_record(snapshot))

    def list_snapshots(self, uuid: str) -> list[SnapshotInfo]:
        records = sorted(self._snapshots(self.ref(uuid)).values(), key=rec.snapshot_order)
        return [rec.snapshot_info(r) for r in records]

    def _snapshot(self, uuid: str, name: str) -> tuple[str, str, dict[str, Any] | None]:
        ref = self.ref(uuid)
        for snapshot, record in self._snapshots(ref).items():
            if record["name_label"] == name:
                return ref, snapshot, record
        return ref, "", None

    def revert_snapshot(self, uuid: str, name: str) -> None:
        ref, snapshot, record = self._snapshot(uuid, name)
        if record is None:
            raise NotFound(f"VM {uuid} has no snapshot named {name!r}")
        self._seen.pop(uuid, None)
        if self.x.VM.get_power_state(ref) in ("Running", "Paused"):
            self.x.VM.hard_shutdown(ref)
        self.run_task(self.x.Async.VM.revert(snapshot), None)
        if record["power_state"] == "Suspended":  # a checkpoint: it was running
            self.run_task(self.x.Async.VM.resume_on(ref, self.host, False, False), None)

    def delete_snapshot(self, uuid: str, name: str) -> None:
        _ref, snapshot, record = self._snapshot(uuid, name)
        if record is not None:
            self._destroy_snapshot(snapshot)

    def _destroy_snapshot(self, snapshot: str) -> None:
        # The snapshot's VDIs were made by the snapshot, not by storage: they go with it.
        vdis = [self.x.VBD.get_VDI(vbd) for vbd in self.x.VM.get_VBDs(snapshot)]
        self.x.VM.destroy(snapshot)
        for vdi in vdis:
            if vdi != rec.NULL:
                self.x.VDI.destroy(vdi)

    # -- volumes -------------------------------------------------------------------------------

    def _vbd_of(self, ref: str, serial: str) -> str | None:
        for vbd in self.x.VM.get_VBDs(ref):
            if self.x.VBD.get_other_config(vbd).get(SERIAL_KEY) == serial:
                return str(vbd)
        return None

    @staticmethod
    def _device(userdevice: str) -> str:
        return f"xvd{chr(ord('a') + int(userdevice))}"

    def attach(self, uuid: str, disk: DiskSpec) -> str:
        ref, power = self.state(uuid)
        assert disk.serial is not None
        existing = self._vbd_of(ref, disk.serial)
        if existing is not None:
            return self._device(self.x.VBD.get_userdevice(existing))
        used = {int(self.x.VBD.get_userdevice(v)) for v in self.x.VM.get_VBDs(ref)}
        slot = next(i for i in range(len(used) + 1) if i not in used)
        vbd = self._create_vbd(ref, self._vdi(disk), slot, disk)
        if power is GuestPower.RUNNING:
            self.x.VBD.plug(vbd)
        return self._device(str(slot))

    def detach(self, uuid: str, serial: str) -> None:
        ref = self.ref(uuid)
        vbd = self._vbd_of(ref, serial)
        if vbd is None:
            return
        if self.x.VBD.get_currently_attached(vbd):
            self.x.VBD.unplug(vbd)
        self.x.VBD.destroy(vbd)

    # -- NICs ----------------------------------------------------------------------------------

    def list_nics(self, uuid: str) -> list[NicInfo]:
        return _nics.list_nics(self.x, self.ref(uuid))

    def attach_nic(self, uuid: str, nic: NicSpec) -> None:
        ref, power = self.state(uuid)
        _nics.attach(self.x, ref, power, nic)

    def detach_nic(self, uuid: str, mac: str) -> None:
        _nics.detach(self.x, self.ref(uuid), mac)
