"""Blocking Hyper-V calls through pywinrm: each operation is one or two PowerShell scripts
(``_script.framed``) whose output is JSON, parsed and validated here. Runs in the driver's worker
thread, never on the event loop.

Hyper-V chooses a VM's Id itself, so a VM cloudcore defines carries the orchestrator's uuid, and
the volumes attached to it (serial -> path and SCSI slot), as JSON in its ``Notes``; the client
caches uuid -> Id, looked up again when Hyper-V no longer knows the Id.

Start and hard stop are one script each, with the state guard inside it: the script prints the
VM's state, then acts through ``Where-Object`` only in the states the base spec allows (Hyper-V's
``Start-VM`` would also resume a saved VM, and ``Stop-VM -TurnOff`` discard one), and the state
printed gives the idempotent outcome.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

import winrm
from winrm.exceptions import WSManFaultError

from cloudcore.errors import (
    Conflict,
    DriverError,
    IllegalTransition,
    NotFound,
    UnsupportedOperation,
)
from hypervisor_drivers.hyperv import _nics
from hypervisor_drivers.hyperv import _records as rec
from hypervisor_drivers.hyperv._errors import MALFORMED, script_error
from hypervisor_drivers.hyperv._records import MiB
from hypervisor_drivers.hyperv._script import framed
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

__all__ = ["HyperVClient"]

_VM_FIELDS = "Id, Name, State, ProcessorCount, MemoryStartup, Notes"
_BY_ID = "$vm = Get-VM -Id $a.id"
_INVALID_SELECTORS = 2150858843  # WS-Man's fault for a shell id the server does not know


class HyperVClient:
    """One WinRM endpoint of a Hyper-V server."""

    def __init__(self, settings: DriverSettings) -> None:
        self.settings = settings
        timeout = max(1, int(float(settings.extra.get("timeout", "30"))))
        self._session = winrm.Session(
            settings.uri,
            auth=(rec.username(settings), rec.password(settings)),
            transport=settings.extra.get("transport", "ntlm"),
            server_cert_validation=settings.extra.get("cert_validation", "validate"),
            ca_trust_path=settings.extra.get("ca_trust_path"),
            proxy=None,
            operation_timeout_sec=timeout,
            read_timeout_sec=timeout + 1,
        )
        self._protocol = self._session.protocol
        self._shell: str | None = None
        self._ids: dict[str, str] = {}  # orchestrator uuid -> Hyper-V Id
        self.computer_name = str(
            self._one(
                ["Get-VMHost | Select-Object ComputerName | ConvertTo-Json -Compress"],
                {},
                "the host",
            )["ComputerName"]
        )

    def ps(self, body: list[str], args: dict[str, Any] | None = None) -> Any:
        """Run ``body`` with ``args``; the JSON it printed, parsed (None when it printed
        nothing). Raises the translated error record when it failed."""
        stdout, stderr, exit_code = self._run(framed(body, args))
        if exit_code != 0:
            raise script_error(stderr, exit_code)
        text = stdout.decode("utf-8", "replace").strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise DriverError(
                f"malformed reply from Hyper-V: not JSON: {text[:200]!r}", code=MALFORMED
            ) from None

    def _run(self, script: str) -> tuple[bytes, bytes, int]:
        """Run ``script`` as pywinrm's ``run_ps`` does, in a shell kept open between calls
        (three WS-Man requests a script instead of five); a shell the server dropped (idle
        timeout, restart) is opened again once."""
        encoded = base64.b64encode(script.encode("utf_16_le")).decode("ascii")
        command = f"powershell -encodedcommand {encoded}"
        for attempt in (1, 2):
            if self._shell is None:
                self._shell = self._protocol.open_shell()
            shell = self._shell
            try:
                command_id = self._protocol.run_command(shell, command)
            except WSManFaultError as exc:
                if attempt == 2 or exc.wsman_fault_code != _INVALID_SELECTORS:
                    raise
                self._shell = None
                continue
            try:
                return self._protocol.get_command_output(shell, command_id)
            finally:
                self._protocol.cleanup_command(shell, command_id)
        raise AssertionError("unreachable")

    def close(self) -> None:
        shell, self._shell = self._shell, None
        if shell is not None:
            with contextlib.suppress(Exception):  # the host may be gone already
                self._protocol.close_shell(shell)

    def _many(self, body: list[str], args: dict[str, Any], what: str) -> list[dict[str, Any]]:
        value = self.ps(body, args)
        items = [] if value is None else value if isinstance(value, list) else [value]
        if not all(isinstance(item, dict) for item in items):
            raise DriverError(
                f"malformed reply from Hyper-V: {what} is not objects", code=MALFORMED
            )
        return items

    def _one(self, body: list[str], args: dict[str, Any], what: str) -> dict[str, Any]:
        items = self._many(body, args, what)
        if len(items) != 1:
            raise DriverError(
                f"malformed reply from Hyper-V: {len(items)} x {what}", code=MALFORMED
            )
        return items[0]

    # -- host ----------------------------------------------------------------------------------

    def inventory(self) -> HostInventory:
        host = self._one(["Get-VMHost | ConvertTo-Json -Compress"], {}, "the host")
        os_info = self._one(
            ["Get-CimInstance -ClassName Win32_OperatingSystem | ConvertTo-Json -Compress"],
            {},
            "os",
        )
        cpu = self._many(
            ["Get-CimInstance -ClassName Win32_Processor | ConvertTo-Json -Compress"], {}, "cpu"
        )
        return HostInventory(
            hostname=rec.field(host, "ComputerName", str, "the host"),
            hypervisor_type="Hyper-V",
            hypervisor_version=rec.field(os_info, "Version", str, "the OS"),
            cpu_model=str(cpu[0].get("Name", "")) if cpu else "",
            cpus=rec.field(host, "LogicalProcessorCount", int, "the host"),
            memory_kib=rec.field(host, "MemoryCapacity", int, "the host") // 1024,
            extra={"os": str(os_info.get("Caption", ""))},
        )

    def capacity(self) -> HostCapacity:
        host = self._one(["Get-VMHost | ConvertTo-Json -Compress"], {}, "the host")
        os_info = self._one(
            ["Get-CimInstance -ClassName Win32_OperatingSystem | ConvertTo-Json -Compress"],
            {},
            "os",
        )
        active = [
            vm for vm in self.list_vms() if vm.power in (GuestPower.RUNNING, GuestPower.PAUSED)
        ]
        return HostCapacity(
            cpus=rec.field(host, "LogicalProcessorCount", int, "the host"),
            memory_kib=rec.field(host, "MemoryCapacity", int, "the host") // 1024,
            allocated_vcpus=sum(vm.vcpus for vm in active),
            allocated_memory_kib=sum(vm.memory_mib * 1024 for vm in active),
            running_vms=len(active),
            free_memory_kib=rec.field(os_info, "FreePhysicalMemory", int, "the OS"),
        )

    # -- reading -------------------------------------------------------------------------------

    def _raw_vms(self) -> list[dict[str, Any]]:
        return self._many(
            [f"Get-VM | Select-Object {_VM_FIELDS} | ConvertTo-Json -Compress"], {}, "Get-VM"
        )

    def list_vms(self) -> list[VMInfo]:
        return [rec.vm_info(vm) for vm in self._raw_vms()]

    def find(self, uuid: str) -> dict[str, Any]:
        """The raw VM record whose orchestrator uuid is ``uuid``. Raises ``NotFound``."""
        for vm in self._raw_vms():
            if rec.vm_info(vm).uuid == uuid.lower():
                self._ids[uuid.lower()] = str(vm["Id"])
                return vm
        raise NotFound(f"no VM {uuid} on Hyper-V host {self.computer_name}")

    def get_vm(self, uuid: str) -> VMInfo:
        return rec.vm_info(self.find(uuid))

    def _act(self, vm: dict[str, Any], lines: list[str], **args: Any) -> Any:
        return self.ps([_BY_ID, *lines], {"id": vm["Id"], **args})

    # -- define --------------------------------------------------------------------------------

    def define(self, spec: DomainSpec) -> VMInfo:
        paths = []
        for disk in spec.disks:
            if not isinstance(disk, FileDisk):
                raise UnsupportedOperation("the hyperv driver takes disks as VHD(X) paths")
            paths.append(disk.path)
        existing = None
        for vm in self._raw_vms():
            info = rec.vm_info(vm)
            if info.uuid == spec.uuid.lower():
                existing = vm
            elif info.name == spec.name:
                raise Conflict(f"another VM on {self.computer_name} is named {spec.name!r}")
        disks = {
            d.serial: {"path": d.path, "number": 0, "location": i}
            for i, d in enumerate(spec.disks)
            if d.serial and isinstance(d, FileDisk)
        }
        args: dict[str, Any] = {
            "name": spec.name,
            "memory": spec.memory_mib * MiB,
            "vcpus": spec.vcpus,
            "notes": json.dumps({"cloudcore_uuid": spec.uuid, "disks": disks}),
            "disks": paths,
        }
        lines = self._define_lines(existing, args)
        lines += [
            f"$vm | Add-VMHardDiskDrive -ControllerType SCSI -Path $a.disks[{i}]"
            for i in range(len(paths))
        ]
        if existing is None:
            nic_lines, nic_args = _nics.add_lines(spec.nics)
            lines += nic_lines
            args.update(nic_args)
        lines.append(f"Get-VM -Id $vm.Id | Select-Object {_VM_FIELDS} | ConvertTo-Json -Compress")
        return rec.vm_info(self._one(lines, {**args, "id": (existing or {}).get("Id")}, "a VM"))

    @staticmethod
    def _define_lines(existing: dict[str, Any] | None, args: dict[str, Any]) -> list[str]:
        common = [
            "$vm | Set-VMProcessor -Count $a.vcpus",
            "$vm | Set-VM -Notes $a.notes",
        ]
        if existing is None:
            return [
                "$vm = New-VM -Name $a.name -MemoryStartupBytes $a.memory -Generation 2 -NoVHD",
                *common,
            ]
        if rec.power(existing) is not GuestPower.STOPPED:
            raise IllegalTransition("a Hyper-V VM must be off to be redefined")
        return [
            _BY_ID,
            "$vm | Set-VM -NewVMName $a.name",
            "$vm | Set-VMMemory -StartupBytes $a.memory",
            *common,
            "$vm | Get-VMHardDiskDrive | Remove-VMHardDiskDrive",
        ]

    # -- power ---------------------------------------------------------------------------------

    def state(self, uuid: str) -> tuple[dict[str, Any], GuestPower]:
        vm = self.find(uuid)
        return vm, rec.power(vm)

    def power(self, uuid: str) -> GuestPower:
        return self.state(uuid)[1]

    def _guarded(self, uuid: str, action: str) -> GuestPower:
        """Print the VM's state, then run ``action`` (a pipeline from ``$vm``, filtered by
        state); one script with the cached Id. Returns the state before the action."""
        body = [_BY_ID, "$vm | Select-Object State | ConvertTo-Json -Compress", action]
        vm_id = self._ids.get(uuid.lower())
        if vm_id is not None:
            try:
                return rec.power(self._one(body, {"id": vm_id}, "a VM state"))
            except NotFound:  # removed, or re-created with a new Id: look it up again
                self._ids.pop(uuid.lower(), None)
        vm = self.find(uuid)
        return rec.power(self._one(body, {"id": vm["Id"]}, "a VM state"))

    def start(self, uuid: str) -> None:
        before = self._guarded(
            uuid, "$vm | Where-Object -Property State -EQ -Value 'Off' | Start-VM"
        )
        if before not in (GuestPower.STOPPED, GuestPower.RUNNING):
            raise IllegalTransition(f"cannot start VM {uuid}: it is {before.value}")

    def request_shutdown(self, uuid: str) -> None:
        self._act(self.find(uuid), ["$vm | Stop-VM -Force -AsJob | Out-Null"])

    def power_off(self, uuid: str) -> StopOutcome:
        """Hard stop: ``ALREADY_STOPPED`` when off, ``IllegalTransition`` when saved."""
        before = self._guarded(
            uuid,
            "$vm | Where-Object -Property State -In -Value 'Running','Paused'"
            " | Stop-VM -TurnOff -Force",
        )
        if before is GuestPower.STOPPED:
            return StopOutcome.ALREADY_STOPPED
        if before is GuestPower.SUSPENDED:
            raise IllegalTransition(f"VM {uuid} is suspended; destroy it to discard its state")
        return StopOutcome.FORCED

    def reboot(self, uuid: str, hard: bool) -> None:
        kind = "" if hard else " -Type Reboot"  # Restart-VM alone resets the virtual hardware
        self._act(self.find(uuid), [f"$vm | Restart-VM{kind} -Force"])

    def _transition(self, uuid: str, done: GuestPower, line: str) -> None:
        vm, power = self.state(uuid)
        if power is not done:
            self._act(vm, [line])  # Hyper-V refuses a wrong state: InvalidState

    def pause(self, uuid: str) -> None:
        self._transition(uuid, GuestPower.PAUSED, "$vm | Suspend-VM")

    def unpause(self, uuid: str) -> None:
        self._transition(uuid, GuestPower.RUNNING, "$vm | Resume-VM")

    def suspend(self, uuid: str) -> None:
        self._transition(uuid, GuestPower.SUSPENDED, "$vm | Save-VM")

    def resume(self, uuid: str) -> None:
        vm, power = self.state(uuid)
        if power is GuestPower.RUNNING:
            return
        if power is not GuestPower.SUSPENDED:
            raise IllegalTransition(f"cannot resume VM {uuid}: it is {power.value}")
        self._act(vm, ["$vm | Start-VM"])  # a saved VM starts where it left off

    def destroy(self, uuid: str) -> None:
        try:
            vm, power = self.state(uuid)
        except NotFound:
            return
        if power in (GuestPower.RUNNING, GuestPower.PAUSED):
            self.power_off(uuid)
        self._act(vm, ["$vm | Remove-VM -Force"])  # checkpoints go with it; VHDs stay

    def migrate(self, uuid: str, destination: DriverSettings, live: bool) -> None:
        target = destination.extra.get("computer_name") or urlsplit(destination.uri).hostname
        vm, power = self.state(uuid)
        if not live and power is GuestPower.RUNNING:
            raise IllegalTransition("Hyper-V moves a running VM live; stop it for a cold move")
        self._act(vm, ["$vm | Move-VM -DestinationHost $a.host"], host=target)

    # -- changes -------------------------------------------------------------------------------

    def reconfigure(self, uuid: str, vcpus: int | None, memory_mib: int | None) -> VMInfo:
        vm, power = self.state(uuid)
        if power is not GuestPower.STOPPED:
            raise IllegalTransition(f"VM {uuid} is {power.value}; Hyper-V resizes it only off")
        lines = []
        if vcpus is not None:
            lines.append("$vm | Set-VMProcessor -Count $a.vcpus")
        if memory_mib is not None:
            lines.append("$vm | Set-VMMemory -StartupBytes $a.memory")
        self._act(vm, lines, vcpus=vcpus, memory=(memory_mib or 0) * MiB)
        return self.get_vm(uuid)

    def _snapshots(self, vm: dict[str, Any]) -> list[dict[str, Any]]:
        return self._many(
            [
                _BY_ID,
                "$vm | Get-VMSnapshot | Select-Object Name, CreationTime, State"
                " | ConvertTo-Json -Compress",
            ],
            {"id": vm["Id"]},
            "Get-VMSnapshot",
        )

    @staticmethod
    def _snapshot_info(snapshot: dict[str, Any]) -> SnapshotInfo:
        return SnapshotInfo(
            name=rec.field(snapshot, "Name", str, "a checkpoint"),
            created_at=rec.date(snapshot.get("CreationTime")),
            power=rec.power(snapshot),
        )

    def create_snapshot(self, uuid: str, name: str) -> SnapshotInfo:
        vm = self.find(uuid)
        if any(s.get("Name") == name for s in self._snapshots(vm)):
            raise Conflict(f"VM {uuid} already has a checkpoint named {name!r}")
        self._act(vm, ["$vm | Checkpoint-VM -SnapshotName $a.name"], name=name)
        return next(self._snapshot_info(s) for s in self._snapshots(vm) if s.get("Name") == name)

    def list_snapshots(self, uuid: str) -> list[SnapshotInfo]:
        infos = [self._snapshot_info(s) for s in self._snapshots(self.find(uuid))]
        return sorted(infos, key=lambda s: s.created_at)  # stable: Hyper-V lists oldest first

    def revert_snapshot(self, uuid: str, name: str) -> None:
        vm = self.find(uuid)
        match = [s for s in self._snapshots(vm) if s.get("Name") == name]
        if not match:
            raise NotFound(f"VM {uuid} has no checkpoint named {name!r}")
        self._act(
            vm,
            ["$vm | Get-VMSnapshot -Name $a.name | Restore-VMSnapshot -Confirm:$false"],
            name=name,
        )
        if rec.power(match[0]) is GuestPower.RUNNING:  # restored saved: bring it back running
            self._act(vm, ["$vm | Start-VM"])

    def delete_snapshot(self, uuid: str, name: str) -> None:
        vm = self.find(uuid)
        if any(s.get("Name") == name for s in self._snapshots(vm)):
            self._act(vm, ["$vm | Get-VMSnapshot -Name $a.name | Remove-VMSnapshot"], name=name)

    # -- volumes -------------------------------------------------------------------------------

    def attach(self, uuid: str, disk: DiskSpec) -> str:
        if not isinstance(disk, FileDisk) or disk.serial is None:
            raise UnsupportedOperation("the hyperv driver attaches VHD(X) files with a serial")
        vm = self.find(uuid)
        notes = rec.notes(vm)
        disks = notes.setdefault("disks", {})
        if disk.serial in disks:
            slot = disks[disk.serial]
            return f"scsi{slot['number']}:{slot['location']}"
        drive = self._one(
            [
                _BY_ID,
                "$vm | Add-VMHardDiskDrive -ControllerType SCSI -Path $a.path -Passthru"
                " | Select-Object ControllerNumber, ControllerLocation | ConvertTo-Json -Compress",
            ],
            {"id": vm["Id"], "path": disk.path},
            "a disk drive",
        )
        number = rec.field(drive, "ControllerNumber", int, "a disk drive")
        location = rec.field(drive, "ControllerLocation", int, "a disk drive")
        disks[disk.serial] = {"path": disk.path, "number": number, "location": location}
        self._act(vm, ["$vm | Set-VM -Notes $a.notes"], notes=json.dumps(notes))
        return f"scsi{number}:{location}"

    def detach(self, uuid: str, serial: str) -> None:
        vm = self.find(uuid)
        notes = rec.notes(vm)
        slot = notes.get("disks", {}).pop(serial, None)
        if slot is None:
            return
        self._act(
            vm,
            [
                "$vm | Get-VMHardDiskDrive -ControllerType SCSI -ControllerNumber $a.number"
                " -ControllerLocation $a.location | Remove-VMHardDiskDrive",
                "$vm | Set-VM -Notes $a.notes",
            ],
            number=slot["number"],
            location=slot["location"],
            notes=json.dumps(notes),
        )

    # -- NICs ----------------------------------------------------------------------------------

    def list_nics(self, uuid: str) -> list[NicInfo]:
        return _nics.list_nics(self._many, str(self.find(uuid)["Id"]))

    def attach_nic(self, uuid: str, nic: NicSpec) -> None:
        _nics.attach(self._many, str(self.find(uuid)["Id"]), nic)

    def detach_nic(self, uuid: str, mac: str) -> None:
        _nics.detach(self._many, str(self.find(uuid)["Id"]), mac)
