"""The XAPI simulator's VM sizes, snapshots and devices (VBD, VIF, VDI), as a mixin of ``Xapi``.

Sizes follow XAPI's rules: ``VCPUs_at_startup <= VCPUs_max``, ``static_min <= dynamic_min <=
dynamic_max <= static_max``, static limits only while halted. ``VM.snapshot`` copies the VM and
snapshots its VDIs; ``VM.checkpoint`` does the same with memory (the copy reads Suspended);
``VM.revert`` brings the VM back to the copy's sizes and power state.
"""

from __future__ import annotations

import time
import uuid as uuid_module
import xmlrpc.client
from typing import Any

from tests.simulators.xapi._store import NULL, Store, XapiError


class Devices:
    """What ``Xapi`` provides to these methods."""

    store: Store
    network: str

    def _vm(self, ref: object) -> dict[str, Any]:
        raise NotImplementedError

    def _need(self, ref: str, *states: str) -> dict[str, Any]:
        raise NotImplementedError

    def _set_power(self, ref: str, state: str, host: str = NULL) -> None:
        raise NotImplementedError

    # -- VM sizes ----------------------------------------------------------------------------

    def _VM_set_VCPUs_max(self, ref: str, value: str) -> str:
        with self.store.lock:
            vm = self._need(ref, "Halted")
            if int(value) < int(vm["VCPUs_at_startup"]):
                raise XapiError("INVALID_VALUE", "VCPUs_max", value)
            self.store.update("VM", ref, VCPUs_max=str(value))
        return ""

    def _VM_set_VCPUs_at_startup(self, ref: str, value: str) -> str:
        with self.store.lock:
            vm = self._vm(ref)
            if not 1 <= int(value) <= int(vm["VCPUs_max"]):
                raise XapiError("INVALID_VALUE", "VCPUs_at_startup", value)
            self.store.update("VM", ref, VCPUs_at_startup=str(value))
        return ""

    def _VM_set_VCPUs_number_live(self, ref: str, value: str) -> str:
        with self.store.lock:
            vm = self._need(ref, "Running")
            if not 1 <= int(value) <= int(vm["VCPUs_max"]):
                raise XapiError("INVALID_VALUE", "VCPUs", value)
            self.store.update("VM", ref, VCPUs_at_startup=str(value))  # as xapi does
        return ""

    def _VM_set_memory_limits(self, ref: str, *limits: str) -> str:
        with self.store.lock:
            self._need(ref, "Halted")
            values = [int(v) for v in limits]
            if values != sorted(values):
                raise XapiError("MEMORY_CONSTRAINT_VIOLATION", "static_min <= ... <= static_max")
            keys = ("static_min", "static_max", "dynamic_min", "dynamic_max")
            fields = {f"memory_{k}": str(v) for k, v in zip(keys, values, strict=True)}
            self.store.update("VM", ref, **fields)
        return ""

    def _VM_set_memory_dynamic_range(self, ref: str, low: str, high: str) -> str:
        with self.store.lock:
            vm = self._vm(ref)
            if not int(vm["memory_static_min"]) <= int(low) <= int(high):
                raise XapiError("MEMORY_CONSTRAINT_VIOLATION", "dynamic range")
            if int(high) > int(vm["memory_static_max"]):
                raise XapiError("MEMORY_CONSTRAINT_VIOLATION", "dynamic_max > static_max")
            self.store.update("VM", ref, memory_dynamic_min=str(low), memory_dynamic_max=str(high))
        return ""

    # -- snapshots ---------------------------------------------------------------------------

    def _copy_vm(self, ref: str, name: str, power: str) -> str:
        vm = self._vm(ref)
        copy = {k: v for k, v in vm.items() if k not in ("uuid", "VBDs", "VIFs", "snapshots")}
        copy.update(
            name_label=name,
            is_a_snapshot=True,
            snapshot_of=ref,
            snapshot_time=xmlrpc.client.DateTime(time.gmtime()),
            power_state=power,
            resident_on=NULL,
            other_config=dict(vm["other_config"]),
        )
        snap = self.store.add("VM", {**copy, "VBDs": [], "VIFs": [], "snapshots": []})
        for vbd in vm["VBDs"]:
            record = dict(self.store.get("VBD", vbd))
            vdi = record["VDI"]
            if vdi != NULL:
                source = self.store.get("VDI", vdi)
                vdi = self.store.add("VDI", {**source, "is_a_snapshot": True, "VBDs": []})
            self._add_vbd({**record, "VM": snap, "VDI": vdi})
        self.store.update("VM", ref, snapshots=[*vm["snapshots"], snap])
        return snap

    def _VM_snapshot(self, ref: str, name: str, *_t: Any) -> str:
        with self.store.lock:
            self._need(ref, "Halted", "Running", "Paused", "Suspended")
            return self._copy_vm(ref, name, "Halted")

    def _VM_checkpoint(self, ref: str, name: str, *_t: Any) -> str:
        with self.store.lock:
            self._need(ref, "Running")
            return self._copy_vm(ref, name, "Suspended")

    def _VM_revert(self, snapshot: str, *_t: Any) -> str:
        with self.store.lock:
            snap = self._vm(snapshot)
            if not snap["is_a_snapshot"]:
                raise XapiError("VM_NOT_A_SNAPSHOT", snapshot)
            ref = snap["snapshot_of"]
            self._need(ref, "Halted", "Suspended")
            sizes = {k: snap[k] for k in snap if k.startswith(("memory_", "VCPUs_"))}
            self.store.update("VM", ref, **sizes)
            self._set_power(ref, snap["power_state"])
        return ""

    # -- devices -----------------------------------------------------------------------------

    def _add_vbd(self, record: dict[str, Any]) -> str:
        vm = self._vm(record["VM"])
        if record["VDI"] != NULL:
            self.store.get("VDI", record["VDI"])
        if any(self.store.get("VBD", v)["userdevice"] == record["userdevice"] for v in vm["VBDs"]):
            raise XapiError("DEVICE_ALREADY_EXISTS", record["userdevice"])
        vbd = self.store.add(
            "VBD",
            {
                **{k: record[k] for k in ("VM", "VDI", "userdevice", "mode", "type", "empty")},
                "bootable": record.get("bootable", False),
                "other_config": dict(record.get("other_config", {})),
                "currently_attached": False,
                "device": "",
            },
        )
        self.store.update("VM", record["VM"], VBDs=[*vm["VBDs"], vbd])
        if record["VDI"] != NULL:
            vdi = self.store.get("VDI", record["VDI"])
            self.store.update("VDI", record["VDI"], VBDs=[*vdi["VBDs"], vbd])
        return vbd

    def _VBD_create(self, record: dict[str, Any]) -> str:
        with self.store.lock:
            return self._add_vbd(record)

    def _VBD_plug(self, vbd: str, *_t: Any) -> str:
        with self.store.lock:
            record = self.store.get("VBD", vbd)
            self._need(record["VM"], "Running")
            if record["currently_attached"]:
                raise XapiError("DEVICE_ALREADY_ATTACHED", vbd)
            self.store.update(
                "VBD",
                vbd,
                currently_attached=True,
                device=f"xvd{chr(97 + int(record['userdevice']))}",
            )
        return ""

    def _VBD_unplug(self, vbd: str, *_t: Any) -> str:
        with self.store.lock:
            record = self.store.get("VBD", vbd)
            self._need(record["VM"], "Running")
            if not record["currently_attached"]:
                raise XapiError("DEVICE_ALREADY_DETACHED", vbd)
            self.store.update("VBD", vbd, currently_attached=False)
        return ""

    def _VBD_destroy(self, vbd: str) -> str:
        with self.store.lock:
            record = self.store.get("VBD", vbd)
            if record["currently_attached"]:
                raise XapiError("OPERATION_NOT_ALLOWED", "VBD is currently attached")
            vm = self._vm(record["VM"])
            self.store.update("VM", record["VM"], VBDs=[v for v in vm["VBDs"] if v != vbd])
            if record["VDI"] in self.store.tables["VDI"]:
                vdi = self.store.get("VDI", record["VDI"])
                self.store.update("VDI", record["VDI"], VBDs=[v for v in vdi["VBDs"] if v != vbd])
            self.store.remove("VBD", vbd)
        return ""

    def _VIF_create(self, record: dict[str, Any]) -> str:
        with self.store.lock:
            vm = self._vm(record["VM"])
            self.store.get("network", record["network"])
            fields = {k: record[k] for k in ("VM", "network", "device", "MAC", "MTU")}
            vif = self.store.add("VIF", {**fields, "currently_attached": False})
            self.store.update("VM", record["VM"], VIFs=[*vm["VIFs"], vif])
        return vif

    def _VIF_plug(self, vif: str, *_t: Any) -> str:
        with self.store.lock:
            record = self.store.get("VIF", vif)
            self._need(record["VM"], "Running")
            if record["currently_attached"]:
                raise XapiError("DEVICE_ALREADY_ATTACHED", vif)
            self.store.update("VIF", vif, currently_attached=True)
        return ""

    def _VIF_unplug(self, vif: str, *_t: Any) -> str:
        with self.store.lock:
            record = self.store.get("VIF", vif)
            self._need(record["VM"], "Running")
            if not record["currently_attached"]:
                raise XapiError("DEVICE_ALREADY_DETACHED", vif)
            self.store.update("VIF", vif, currently_attached=False)
        return ""

    def _VIF_destroy(self, vif: str) -> str:
        with self.store.lock:
            record = self.store.get("VIF", vif)
            if record["currently_attached"] and self._vm(record["VM"])["power_state"] == "Running":
                raise XapiError("OPERATION_NOT_ALLOWED", "VIF is currently attached")
            vm = self._vm(record["VM"])
            self.store.update("VM", record["VM"], VIFs=[v for v in vm["VIFs"] if v != vif])
            self.store.remove("VIF", vif)
        return ""

    def _VDI_create(self, record: dict[str, Any]) -> str:
        """An empty VDI on an SR (its content comes through ``/import_raw_vdi``)."""
        with self.store.lock:
            self.store.get("SR", record["SR"])
            return self.store.add(
                "VDI",
                {
                    "name_label": record.get("name_label", ""),
                    "SR": record["SR"],
                    "location": str(uuid_module.uuid4()),
                    "virtual_size": str(record["virtual_size"]),
                    "is_a_snapshot": False,
                    "VBDs": [],
                },
            )

    def _VDI_destroy(self, vdi: str) -> str:
        with self.store.lock:
            if self.store.get("VDI", vdi)["VBDs"]:
                raise XapiError("VDI_IN_USE", vdi, "destroy")
            self.store.remove("VDI", vdi)
        return ""
