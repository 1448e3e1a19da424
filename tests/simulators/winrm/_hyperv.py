"""A simulated Hyper-V host: VMs, checkpoints and disks behind the Hyper-V PowerShell cmdlets.

Objects look as ``ConvertTo-Json`` shows them from Windows PowerShell 5.1: ``State`` is the
``VMState`` enum as a number (Running 2, Off 3, Saved 6, Paused 9), dates are ``/Date(ms)/``,
sizes are bytes. Refusals are error records with Hyper-V's ``FullyQualifiedErrorId`` and
category: an unknown VM is ``ObjectNotFound``, a cmdlet in the wrong state ``InvalidOperation``
with ``InvalidState``, memory beyond the host ``ResourceUnavailable``.

A guest answers ``Stop-VM`` (graceful) after ``guest_shutdown_delay`` seconds, unless its VM name
is in ``ignore_shutdown``. ``Move-VM`` hands a VM to the peer host of that name (``peers``).
"""

from __future__ import annotations

import threading
import time
import uuid as uuid_module
from typing import Any

from tests.simulators.winrm._files import HostFiles
from tests.simulators.winrm._powershell import Cmdlet, Interpreter, PSError, Result

RUNNING, OFF, SAVED, PAUSED = 2, 3, 6, 9
_NS = "Microsoft.HyperV.PowerShell.Commands"


def _date(seconds: float) -> str:
    return f"/Date({int(seconds * 1000)})/"


class HyperVHost:
    """One Hyper-V server. Thread-safe: every cmdlet runs under one lock."""

    def __init__(
        self,
        computer_name: str = "HV01",
        *,
        cpus: int = 8,
        memory_kib: int = 16 * 1024 * 1024,
        peers: dict[str, HyperVHost] | None = None,
    ) -> None:
        self.computer_name = computer_name
        self.cpus = cpus
        self.memory_bytes = memory_kib * 1024
        self.vms: dict[str, dict[str, Any]] = {}
        self.lock = threading.RLock()
        self.guest_shutdown_delay = 0.05
        self.ignore_shutdown: set[str] = set()
        self.scripts: list[str] = []
        self.peers = peers if peers is not None else {}
        self.peers[computer_name] = self
        #: The host's files (the driver's copies of templates' VHDX images).
        self.disk_files = HostFiles()
        self.virtual_hard_disk_path = "C:\\ProgramData\\Microsoft\\Windows\\Virtual Hard Disks"
        self.interpreter = Interpreter(self._cmdlets())

    def run(self, script: str) -> Result:
        with self.lock:
            self.scripts.append(script)
            return self.interpreter.run(script)

    def _cmdlets(self) -> dict[str, Cmdlet]:
        names = {
            "Get-VMHost": self._get_vmhost,
            "Get-CimInstance": self._get_cim,
            "Get-VM": self._get_vm,
            "New-VM": self._new_vm,
            "Set-VM": self._set_vm,
            "Set-VMProcessor": self._set_processor,
            "Set-VMMemory": self._set_memory,
            "Start-VM": self._start,
            "Stop-VM": self._stop,
            "Restart-VM": self._restart,
            "Suspend-VM": self._suspend,
            "Resume-VM": self._resume,
            "Save-VM": self._save,
            "Remove-VM": self._remove,
            "Checkpoint-VM": self._checkpoint,
            "Get-VMSnapshot": self._get_snapshots,
            "Restore-VMSnapshot": self._restore,
            "Remove-VMSnapshot": self._remove_snapshot,
            "Add-VMHardDiskDrive": self._add_disk,
            "Get-VMHardDiskDrive": self._get_disks,
            "Remove-VMHardDiskDrive": self._remove_disk,
            "Add-VMNetworkAdapter": self._add_nic,
            "Get-VMNetworkAdapter": self._get_nics,
            "Remove-VMNetworkAdapter": self._remove_nics,
            "Move-VM": self._move,
            "Select-Object": self._select,
            "Where-Object": self._where,
            "ConvertTo-Json": self._to_json,
            "Write-Error": self._write_error,
            "Out-Null": lambda items, params: [],
            **self.disk_files.cmdlets(),
        }
        return names

    # -- helpers -----------------------------------------------------------------------------

    def _public(self, vm: dict[str, Any]) -> dict[str, Any]:
        self._settle(vm)
        keys = ("Id", "Name", "State", "ProcessorCount", "MemoryStartup", "Notes")
        return {**{k: vm[k] for k in keys}, "ComputerName": self.computer_name}

    def _settle(self, vm: dict[str, Any]) -> None:
        # A graceful shutdown in progress completes when the guest has had its time.
        due = vm.get("shutdown_due")
        if due is not None and time.monotonic() >= due and vm["State"] == RUNNING:
            vm.update(State=OFF, shutdown_due=None)

    def _vms(self, items: list[Any], params: dict[str, Any], cmdlet: str) -> list[dict[str, Any]]:
        if params.get("VM") is not None:
            items = params["VM"] if isinstance(params["VM"], list) else [params["VM"]]
        vms = []
        for item in items:
            vm = self.vms.get(str(item.get("Id"))) if isinstance(item, dict) else None
            if vm is None:
                raise PSError(
                    f"InvalidParameter,{_NS}.{cmdlet.replace('-', '')}",
                    "ObjectNotFound",
                    "Hyper-V was unable to find a virtual machine with the given identifier.",
                )
            self._settle(vm)
            vms.append(vm)
        return vms

    @staticmethod
    def _invalid_state(cmdlet: str, vm: dict[str, Any]) -> PSError:
        return PSError(
            f"InvalidState,{_NS}.{cmdlet.replace('-', '')}",
            "InvalidOperation",
            f"'{vm['Name']}' failed to change state. The operation cannot be performed while the "
            "object is in its current state.",
        )

    def _need(self, cmdlet: str, vm: dict[str, Any], *states: int) -> None:
        if vm["State"] not in states:
            raise self._invalid_state(cmdlet, vm)

    def _running_bytes(self) -> int:
        return sum(
            vm["MemoryStartup"] for vm in self.vms.values() if vm["State"] in (RUNNING, PAUSED)
        )

    # -- host --------------------------------------------------------------------------------

    def _get_vmhost(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        return [
            {
                "ComputerName": self.computer_name,
                "LogicalProcessorCount": self.cpus,
                "MemoryCapacity": self.memory_bytes,
                "VirtualHardDiskPath": self.virtual_hard_disk_path,
            }
        ]

    def _get_cim(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        cls = params.get("ClassName")
        if cls == "Win32_OperatingSystem":
            free_kib = (self.memory_bytes - self._running_bytes()) // 1024
            return [
                {
                    "Version": "10.0.20348",
                    "Caption": "Microsoft Windows Server 2022 Datacenter",
                    "FreePhysicalMemory": free_kib,
                }
            ]
        if cls == "Win32_Processor":
            return [{"Name": "Simulated Xeon"}]
        raise PSError(
            "HRESULT 0x80041010,Microsoft.Management.Infrastructure.CimCmdlets."
            "GetCimInstanceCommand",
            "MetadataError",
            "Invalid class",
        )

    # -- VMs ---------------------------------------------------------------------------------

    def _get_vm(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        if "Id" in params:
            return [self._public(v) for v in self._vms([{"Id": params["Id"]}], {}, "Get-VM")]
        return [self._public(vm) for vm in self.vms.values()]

    def _new_vm(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        vm_id = str(uuid_module.uuid4())
        self.vms[vm_id] = {
            "Id": vm_id,
            "Name": str(params["Name"]),
            "State": OFF,
            "ProcessorCount": 1,
            "MemoryStartup": int(params.get("MemoryStartupBytes", 512 * 1024 * 1024)),
            "Notes": "",
            "Generation": int(params.get("Generation", 1)),
            "disks": [],
            "nics": [],
            "snapshots": [],
        }
        return [self._public(self.vms[vm_id])]

    def _set_vm(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Set-VM"):
            if "ProcessorCount" in params or "MemoryStartupBytes" in params:
                self._need("Set-VM", vm, OFF)
            if "Name" in params and "VM" in params:
                vm["Name"] = str(params["Name"])
            if "NewVMName" in params:
                vm["Name"] = str(params["NewVMName"])
            if "Notes" in params:
                vm["Notes"] = str(params["Notes"])
        return []

    def _set_processor(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Set-VMProcessor"):
            self._need("Set-VMProcessor", vm, OFF)
            vm["ProcessorCount"] = int(params["Count"])
        return []

    def _set_memory(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Set-VMMemory"):
            self._need("Set-VMMemory", vm, OFF)
            vm["MemoryStartup"] = int(params["StartupBytes"])
        return []

    def _start(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Start-VM"):
            self._need("Start-VM", vm, OFF, SAVED)
            free = self.memory_bytes - self._running_bytes()
            if vm["MemoryStartup"] > free:
                raise PSError(
                    f"OutOfMemory,{_NS}.StartVM",
                    "ResourceUnavailable",
                    f"'{vm['Name']}' could not initialize. Not enough memory in the system to "
                    "start the virtual machine.",
                )
            vm["State"] = RUNNING
        return []

    def _stop(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Stop-VM"):
            if params.get("TurnOff"):
                self._need("Stop-VM", vm, RUNNING, PAUSED, SAVED)
                vm.update(State=OFF, shutdown_due=None)
                continue
            self._need("Stop-VM", vm, RUNNING)
            if vm["Name"] not in self.ignore_shutdown:
                vm["shutdown_due"] = time.monotonic() + self.guest_shutdown_delay
            if not params.get("AsJob"):
                raise PSError(f"Unspecified,{_NS}.StopVM", "NotSpecified", "use -AsJob here")
        return [{"Id": 1, "State": "Running"}] if params.get("AsJob") else []

    def _restart(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Restart-VM"):
            self._need("Restart-VM", vm, RUNNING)
        return []

    def _suspend(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Suspend-VM"):
            self._need("Suspend-VM", vm, RUNNING)
            vm["State"] = PAUSED
        return []

    def _resume(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Resume-VM"):
            self._need("Resume-VM", vm, PAUSED)
            vm["State"] = RUNNING
        return []

    def _save(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Save-VM"):
            self._need("Save-VM", vm, RUNNING, PAUSED)
            vm["State"] = SAVED
        return []

    def _remove(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Remove-VM"):
            self._need("Remove-VM", vm, OFF, SAVED)
            del self.vms[vm["Id"]]
        return []

    def _move(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        peer = self.peers.get(str(params.get("DestinationHost")))
        if peer is None or peer is self:
            raise PSError(
                f"Unspecified,{_NS}.MoveVM",
                "NotSpecified",
                f"Virtual machine migration failed: no host {params.get('DestinationHost')}",
            )
        for vm in self._vms(items, params, "Move-VM"):
            with peer.lock:
                peer.vms[vm["Id"]] = vm
            del self.vms[vm["Id"]]
        return []

    # -- checkpoints and devices -------------------------------------------------------------

    def _get_snapshots(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        found = []
        for vm in self._vms(items, params, "Get-VMSnapshot"):
            for snap in vm["snapshots"]:
                if params.get("Name") in (None, snap["Name"]):
                    found.append({**snap, "VMId": vm["Id"]})
        return found

    def _checkpoint(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for vm in self._vms(items, params, "Checkpoint-VM"):
            vm["snapshots"].append(
                {
                    "Name": str(params["SnapshotName"]),
                    "CreationTime": _date(time.time()),
                    "State": vm["State"],
                    "ProcessorCount": vm["ProcessorCount"],
                    "MemoryStartup": vm["MemoryStartup"],
                }
            )
        return []

    def _restore(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for snap in items:
            vm = self.vms[snap["VMId"]]
            vm.update(
                State=SAVED if snap["State"] in (RUNNING, PAUSED) else OFF,
                ProcessorCount=snap["ProcessorCount"],
                MemoryStartup=snap["MemoryStartup"],
            )
        return []

    def _remove_snapshot(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for snap in items:
            vm = self.vms[snap["VMId"]]
            vm["snapshots"] = [s for s in vm["snapshots"] if s["Name"] != snap["Name"]]
        return []

    def _add_disk(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        added = []
        for vm in self._vms(items, params, "Add-VMHardDiskDrive"):
            if params.get("ControllerType", "SCSI") != "SCSI":
                raise PSError(
                    f"InvalidParameter,{_NS}.AddVMHardDiskDrive",
                    "InvalidArgument",
                    "only SCSI controllers on a generation 2 VM",
                )
            used = {d["ControllerLocation"] for d in vm["disks"]}
            location = next(i for i in range(64) if i not in used)
            drive = {
                "VMId": vm["Id"],
                "ControllerType": "SCSI",
                "ControllerNumber": 0,
                "ControllerLocation": location,
                "Path": str(params["Path"]),
            }
            vm["disks"].append(drive)
            added.append(drive)
        return added if params.get("Passthru") else []

    def _get_disks(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        drives = [d for vm in self._vms(items, params, "Get-VMHardDiskDrive") for d in vm["disks"]]
        keys = ("ControllerType", "ControllerNumber", "ControllerLocation")
        return [d for d in drives if all(params.get(k, d[k]) == d[k] for k in keys)]

    def _remove_disk(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for drive in items:
            vm = self.vms[drive["VMId"]]
            vm["disks"] = [d for d in vm["disks"] if d["Path"] != drive["Path"]]
        return []

    def _add_nic(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        # Hyper-V writes MACs as 12 hex digits; a dynamic one comes from Microsoft's 00155D.
        for vm in self._vms(items, params, "Add-VMNetworkAdapter"):
            mac = params.get("StaticMacAddress") or f"00155D{uuid_module.uuid4().hex[:6].upper()}"
            nic = {"VMId": vm["Id"], "SwitchName": params.get("SwitchName"), "MacAddress": mac}
            vm["nics"].append(nic)
        return []

    def _get_nics(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        return [n for vm in self._vms(items, params, "Get-VMNetworkAdapter") for n in vm["nics"]]

    def _remove_nics(self, items: list[Any], params: dict[str, Any]) -> list[Any]:
        for nic in items:
            vm = self.vms[nic["VMId"]]
            vm["nics"] = [n for n in vm["nics"] if n["MacAddress"] != nic["MacAddress"]]
        return []

    # -- plumbing cmdlets --------------------------------------------------------------------

    @staticmethod
    def _select(items: list[Any], params: dict[str, Any]) -> list[Any]:
        names = params.get("Property", params.get("", []))
        names = names if isinstance(names, list) else [names]
        return [{n: item.get(n) for n in names} for item in items]

    @staticmethod
    def _where(items: list[Any], params: dict[str, Any]) -> list[Any]:
        # Only the comparison form: Where-Object -Property P (-EQ | -In) -Value V. An enum
        # property compares by its name, as PowerShell converts the string to the enum.
        names = {RUNNING: "Running", OFF: "Off", SAVED: "Saved", PAUSED: "Paused"}
        prop, value = str(params["Property"]), params["Value"]
        wanted = {str(v) for v in value} if params.get("In") else {str(value)}
        if not params.get("In") and not params.get("EQ"):
            raise PSError("NotSupported", "NotImplemented", "Where-Object: -EQ or -In only")

        def shown(item: dict[str, Any]) -> str:
            field = item.get(prop)
            return names.get(field, str(field)) if prop == "State" else str(field)

        return [item for item in items if isinstance(item, dict) and shown(item) in wanted]

    @staticmethod
    def _to_json(items: list[Any], params: dict[str, Any]) -> list[Any]:
        import json

        if not items:
            return []
        value = items[0] if len(items) == 1 else items  # PowerShell unrolls a single object
        separators = (",", ":") if params.get("Compress") else (", ", ": ")
        return [json.dumps(value, separators=separators)]

    @staticmethod
    def _write_error(items: list[Any], params: dict[str, Any]) -> list[Any]:
        message = " ".join(str(p) for p in params.get("", []))
        raise PSError(
            "Microsoft.PowerShell.Commands.WriteErrorException",
            "NotSpecified",
            message,
            exception="WriteErrorException",
        )
