"""The XAPI simulator's API: a pool of hosts with local SRs, a network, VMs, disks and tasks.

What it models, from the xen-api data model: ``session.login_with_password``/``logout``; generic
``<class>.get_all``/``get_all_records``/``get_record``/``get_by_uuid``/``get_by_name_label``/
``get_<field>``; ``VM.create``/``destroy``/``start_on``/``clean_shutdown``/``hard_shutdown``/
``clean_reboot``/``hard_reboot``/``pause``/``unpause``/``suspend``/``resume_on``/
``set_VCPUs_max``/``set_VCPUs_at_startup``/``set_VCPUs_number_live``/``set_memory_limits``/
``set_memory_dynamic_range``/``snapshot``/``checkpoint``/``revert``/``pool_migrate``/
``set_affinity``/``add_to_other_config``; ``VBD.create``/``plug``/``unplug``/``destroy``;
``VIF.create``/``plug``/``unplug``/``destroy``; ``VDI.destroy``;
``task.get_record``/``cancel``/``destroy``; ``Async.<any>``; ``event.from``. Power-state
rules and error codes follow XAPI
(``VM_BAD_POWER_STATE [vm, expected, actual]``, ``HANDLE_INVALID [class, ref]``,
``HOST_NOT_ENOUGH_FREE_MEMORY [needed, available]``, ``SESSION_INVALID``...).

A guest reacts to a clean shutdown after ``guest_shutdown_delay`` seconds, unless the VM was
marked with ``ignore_clean_shutdown`` (a guest without PV drivers): then only cancelling the task
or a hard shutdown ends it.
"""

from __future__ import annotations

import threading
import time
import uuid as uuid_module
import xmlrpc.client
from typing import Any

from tests.simulators.xapi._devices import Devices
from tests.simulators.xapi._store import NULL, Store, XapiError

GiB = 1024**3
_VM_CREATE_FIELDS = (
    "name_label",
    "memory_static_max",
    "memory_dynamic_max",
    "memory_dynamic_min",
    "memory_static_min",
    "VCPUs_max",
    "VCPUs_at_startup",
    "actions_after_shutdown",
    "actions_after_reboot",
    "actions_after_crash",
    "HVM_boot_policy",
    "other_config",
    "is_a_template",
    "affinity",
)
_WRITABLE = {
    "VM": {"name_label", "name_description", "affinity"},
    "VDI": {"name_label", "name_description"},
}


class Xapi(Devices):
    """One simulated pool. ``call`` is what the XML-RPC server dispatches to."""

    def __init__(
        self,
        *,
        hosts: tuple[str, ...] = ("xs-host-1", "xs-host-2"),
        host_cpus: int = 8,
        host_memory_kib: int = 16 * 1024 * 1024,
        users: dict[str, str] | None = None,
    ) -> None:
        self.store = Store(users or {"root": "secret"})
        self.guest_shutdown_delay = 0.05
        self.ignore_clean_shutdown: set[str] = set()  # VM uuids whose guests ignore it
        self.calls: list[str] = []
        #: VDI uuid -> (sha256, length) of what ``/import_raw_vdi`` received.
        self.imported: dict[str, tuple[str, int]] = {}
        host_refs = [self._add_host(name, host_cpus, host_memory_kib) for name in hosts]
        self.network = self.store.add(
            "network",
            {"name_label": "Pool-wide network associated with eth0", "bridge": "xenbr0"},
        )
        default_sr = self.store.get("host", host_refs[0])["local_sr"]
        self.store.add("pool", {"name_label": "", "master": host_refs[0], "default_SR": default_sr})

    def _add_host(self, name: str, cpus: int, memory_kib: int) -> str:
        metrics = self.store.add(
            "host_metrics",
            {"memory_total": str(memory_kib * 1024), "memory_free": str(memory_kib * 1024)},
        )
        host = self.store.add(
            "host",
            {
                "name_label": name,
                "hostname": name,
                "address": "127.0.0.1",
                "enabled": True,
                "API_version_major": "2",
                "API_version_minor": "21",
                "software_version": {"product_brand": "XenServer", "product_version": "8.2.1"},
                "cpu_info": {
                    "cpu_count": str(cpus),
                    "modelname": "Simulated Xeon",
                    "speed": "2400",
                },
                "metrics": metrics,
            },
        )
        sr = self.store.add(
            "SR", {"name_label": f"Local storage on {name}", "type": "ext", "shared": False}
        )
        self.store.update("host", host, local_sr=sr)
        self.store.add(
            "VM",
            {
                **self._vm_defaults(),
                "name_label": f"Control domain on host: {name}",
                "is_control_domain": True,
                "power_state": "Running",
                "resident_on": host,
                "domid": "0",
            },
        )
        return host

    @staticmethod
    def _vm_defaults() -> dict[str, Any]:
        return {
            "name_label": "",
            "name_description": "",
            "power_state": "Halted",
            "is_a_template": False,
            "is_a_snapshot": False,
            "is_control_domain": False,
            "snapshot_of": NULL,
            "snapshots": [],
            "snapshot_time": xmlrpc.client.DateTime(0),
            "resident_on": NULL,
            "affinity": NULL,
            "memory_static_max": "0",
            "memory_dynamic_max": "0",
            "memory_dynamic_min": "0",
            "memory_static_min": "0",
            "VCPUs_max": "1",
            "VCPUs_at_startup": "1",
            "VBDs": [],
            "VIFs": [],
            "other_config": {},
            "domid": "-1",
        }

    # -- dispatch ----------------------------------------------------------------------------

    def call(self, method: str, params: list[Any]) -> Any:
        self.calls.append(method)
        if method == "session.login_with_password":
            return self.store.login(str(params[0]), str(params[1]))
        if not params:
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, 1, 0)
        session, args = params[0], list(params[1:])
        self.store.check_session(session)
        if method == "session.logout":
            self.store.logout(session)
            return ""
        if method.startswith("Async."):
            return self._async(method.removeprefix("Async."), session, args)
        if method == "event.from":
            classes, token, timeout = args
            return self.store.events_from(session, classes, token, min(float(timeout), 30.0))
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is not None:
            return handler(*args)
        return self._generic(method, args)

    def _generic(self, method: str, args: list[Any]) -> Any:
        cls, _, op = method.partition(".")
        table = self.store.tables.get(cls)
        if table is None:
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        with self.store.lock:
            if op == "get_all":
                return list(table)
            if op == "get_all_records":
                return {ref: dict(rec) for ref, rec in table.items()}
            if op == "get_by_name_label":
                return self.store.find(cls, name_label=args[0])
            if op == "get_by_uuid":
                found = self.store.find(cls, uuid=args[0])
                if not found:
                    raise XapiError("UUID_INVALID", cls, args[0])
                return found[0]
            record = self.store.get(cls, args[0]) if args else None
            if op == "get_record" and record is not None:
                return dict(record)
            if op.startswith("get_") and record is not None and op[4:] in record:
                return record[op[4:]]
            if op.startswith("set_") and op[4:] in _WRITABLE.get(cls, set()) and len(args) == 2:
                self.store.update(cls, args[0], **{op[4:]: args[1]})
                return ""
            if op == "add_to_other_config" and record is not None:
                if args[1] in record["other_config"]:
                    raise XapiError("MAP_DUPLICATE_KEY", cls, "other_config", args[0], args[1])
                self.store.update(
                    cls, args[0], other_config={**record["other_config"], args[1]: args[2]}
                )
                return ""
        raise XapiError("MESSAGE_METHOD_UNKNOWN", method)

    # -- tasks -------------------------------------------------------------------------------

    def _async(self, method: str, session: str, args: list[Any]) -> str:
        task = self.store.add(
            "task",
            {
                "name_label": f"Async.{method}",
                "status": "pending",
                "progress": 0.0,
                "result": "",
                "error_info": [],
                "created": xmlrpc.client.DateTime(time.gmtime()),
            },
        )

        def run() -> None:
            try:
                value = self.call(method, [session, *args, {"task": task}])
            except XapiError as exc:
                fields: dict[str, Any] = {"status": "failure", "error_info": exc.description}
            else:
                fields = {"status": "success", "result": f"<value>{value or ''}</value>"}
            with self.store.lock:
                if task in self.store.tables["task"]:
                    self.store.update("task", task, progress=1.0, **fields)

        threading.Thread(target=run, name=f"xapi-{method}", daemon=True).start()
        return task

    def _task_cancel(self, task: str) -> str:
        with self.store.lock:
            if self.store.get("task", task)["status"] == "pending":
                self.store.update("task", task, status="cancelling")
        return ""

    def _task_destroy(self, task: str) -> str:
        self.store.remove("task", task)
        return ""

    # -- helpers -----------------------------------------------------------------------------

    def _vm(self, ref: object) -> dict[str, Any]:
        return self.store.get("VM", ref)

    def _need(self, ref: str, *states: str) -> dict[str, Any]:
        vm = self._vm(ref)
        if vm["power_state"] not in states:
            raise XapiError("VM_BAD_POWER_STATE", ref, states[0].lower(), vm["power_state"].lower())
        return vm

    def host_free_bytes(self, host: str) -> int:
        metrics = self.store.get("host_metrics", self.store.get("host", host)["metrics"])
        used = sum(
            int(vm["memory_dynamic_max"])
            for vm in self.store.tables["VM"].values()
            if vm["resident_on"] == host and vm["power_state"] in ("Running", "Paused")
        )
        return int(metrics["memory_total"]) - used

    def _place(self, ref: str, host: str) -> None:
        self.store.get("host", host)
        needed = int(self._vm(ref)["memory_dynamic_max"])
        free = self.host_free_bytes(host)
        if needed > free:
            raise XapiError("HOST_NOT_ENOUGH_FREE_MEMORY", needed, free)

    def _set_power(self, ref: str, state: str, host: str = NULL) -> None:
        domid = "-1" if state in ("Halted", "Suspended") else str(len(self.store.tables["VM"]))
        self.store.update("VM", ref, power_state=state, resident_on=host, domid=domid)
        metrics_host = host if host != NULL else None
        if metrics_host is not None or state in ("Halted", "Suspended"):
            self._refresh_free()

    def _refresh_free(self) -> None:
        for host, rec in self.store.tables["host"].items():
            self.store.update(
                "host_metrics", rec["metrics"], memory_free=str(self.host_free_bytes(host))
            )

    def _resident(self, ref: str) -> str:
        return str(self._vm(ref)["resident_on"])

    # -- VM ----------------------------------------------------------------------------------

    def _VM_create(self, record: dict[str, Any]) -> str:
        missing = [f for f in _VM_CREATE_FIELDS if f not in record]
        if missing:
            raise XapiError("FIELD_TYPE_ERROR", missing[0])
        limits = [int(record[f"memory_{k}"]) for k in ("static_min", "dynamic_min")]
        limits += [int(record[f"memory_{k}"]) for k in ("dynamic_max", "static_max")]
        if limits != sorted(limits):
            raise XapiError("MEMORY_CONSTRAINT_VIOLATION", "static_min <= dynamic_min <= ...")
        if not 1 <= int(record["VCPUs_at_startup"]) <= int(record["VCPUs_max"]):
            raise XapiError("INVALID_VALUE", "VCPUs_at_startup", record["VCPUs_at_startup"])
        fields = {k: record[k] for k in _VM_CREATE_FIELDS}
        return self.store.add("VM", {**self._vm_defaults(), **fields})

    def _VM_destroy(self, ref: str) -> str:
        with self.store.lock:
            vm = self._need(ref, "Halted", "Suspended")
            # A checkpoint is a snapshot in Suspended state: XAPI destroys it like any snapshot.
            if vm["power_state"] == "Suspended" and not vm["is_a_snapshot"]:
                raise XapiError("VM_BAD_POWER_STATE", ref, "halted", "suspended")
            for vbd in list(vm["VBDs"]):
                self.store.update("VBD", vbd, currently_attached=False)
                self._VBD_destroy(vbd)
            for vif in list(vm["VIFs"]):
                self._VIF_destroy(vif)
            parent = vm["snapshot_of"]
            if parent in self.store.tables["VM"]:
                parent_rec = self._vm(parent)
                self.store.update(
                    "VM", parent, snapshots=[s for s in parent_rec["snapshots"] if s != ref]
                )
            self.store.remove("VM", ref)
        return ""

    def _VM_start_on(self, ref: str, host: str, paused: bool, force: bool, *_task: Any) -> str:
        with self.store.lock:
            self._need(ref, "Halted")
            if self._vm(ref)["is_a_template"]:
                raise XapiError("VM_IS_TEMPLATE", ref)
            self._place(ref, host)
            self._set_power(ref, "Paused" if paused else "Running", host)
        return ""

    def _VM_start(self, ref: str, paused: bool, force: bool, *_task: Any) -> str:
        affinity = self._vm(ref)["affinity"]
        host = affinity if affinity != NULL else next(iter(self.store.tables["host"]))
        return self._VM_start_on(ref, host, paused, force)

    def _VM_clean_shutdown(self, ref: str, *task: Any) -> str:
        self._need(ref, "Running")
        task_ref = task[0]["task"] if task else None
        deadline = time.monotonic() + (3600 if task_ref else 5.0)
        with self.store.lock:
            ignored = self._vm(ref)["uuid"] in self.ignore_clean_shutdown
            ready = time.monotonic() + self.guest_shutdown_delay
            while ignored or time.monotonic() < ready:
                if task_ref and self.store.get("task", task_ref)["status"] == "cancelling":
                    self.store.update("task", task_ref, status="cancelled")
                    raise XapiError("TASK_CANCELLED", task_ref)
                if self._vm(ref)["power_state"] != "Running":
                    raise XapiError("VM_BAD_POWER_STATE", ref, "running", "halted")
                if time.monotonic() >= deadline:
                    raise XapiError("VM_SHUTDOWN_TIMEOUT", ref, "5")
                self.store.changed.wait(0.01)
            self._set_power(ref, "Halted")
        return ""

    def _VM_hard_shutdown(self, ref: str, *_task: Any) -> str:
        with self.store.lock:
            self._need(ref, "Running", "Paused", "Suspended")
            self._set_power(ref, "Halted")
        return ""

    def _reboot(self, ref: str) -> str:
        with self.store.lock:
            self._need(ref, "Running")
            host = self._resident(ref)
            self._set_power(ref, "Running", host)
        return ""

    def _VM_clean_reboot(self, ref: str, *_task: Any) -> str:
        return self._reboot(ref)

    def _VM_hard_reboot(self, ref: str, *_task: Any) -> str:
        return self._reboot(ref)

    def _VM_pause(self, ref: str, *_task: Any) -> str:
        with self.store.lock:
            self._need(ref, "Running")
            self.store.update("VM", ref, power_state="Paused")
        return ""

    def _VM_unpause(self, ref: str, *_task: Any) -> str:
        with self.store.lock:
            self._need(ref, "Paused")
            self.store.update("VM", ref, power_state="Running")
        return ""

    def _VM_suspend(self, ref: str, *_task: Any) -> str:
        with self.store.lock:
            self._need(ref, "Running")
            self._set_power(ref, "Suspended")
        return ""

    def _VM_resume_on(self, ref: str, host: str, paused: bool, force: bool, *_t: Any) -> str:
        with self.store.lock:
            self._need(ref, "Suspended")
            self._place(ref, host)
            self._set_power(ref, "Paused" if paused else "Running", host)
        return ""

    def _VM_pool_migrate(self, ref: str, host: str, options: dict[str, str], *_t: Any) -> str:
        with self.store.lock:
            self._need(ref, "Running")
            if host == self._resident(ref):
                raise XapiError("HOST_CANNOT_ATTACH_NETWORK", host, self.network)
            self._place(ref, host)
            self._set_power(ref, "Running", host)
        return ""

    # -- HTTP handlers -----------------------------------------------------------------------

    def import_vdi(
        self, path: str, query: dict[str, str], size: int, sha256: str, tail: bytes
    ) -> tuple[int, str]:
        """``PUT /import_raw_vdi``: (HTTP status, reason). The content is recorded in
        ``imported`` (VDI uuid -> sha256 and length)."""
        if path != "/import_raw_vdi":
            return 404, "Not Found"
        try:
            self.store.check_session(query.get("session_id"))
            with self.store.lock:
                vdi = self.store.get("VDI", query.get("vdi", ""))
        except XapiError as exc:
            return 403 if exc.description[0] == "SESSION_INVALID" else 404, exc.description[0]
        declared = int(vdi["virtual_size"])
        if query.get("format", "raw") == "vhd":
            if not tail.startswith(b"conectix"):
                return 400, "VDI_IO_ERROR not a VHD"
            if int.from_bytes(tail[48:56], "big") != declared:
                return 400, "VDI_IO_ERROR the VHD's size is not the VDI's"
        elif size != declared:
            return 400, "VDI_IO_ERROR the raw image is not the VDI's size"
        self.imported[str(vdi["uuid"])] = (sha256, size)
        return 200, "OK"

    # -- for tests ---------------------------------------------------------------------------

    def add_vdi(self, name: str, *, host: str | None = None, size_gib: int = 1) -> str:
        """A disk image on a host's local SR (the pool master's by default); returns its uuid."""
        host_ref = self.host_ref(host) if host else next(iter(self.store.tables["host"]))
        sr = self.store.get("host", host_ref)["local_sr"]
        ref = self.store.add(
            "VDI",
            {
                "name_label": name,
                "SR": sr,
                "location": str(uuid_module.uuid4()),
                "virtual_size": str(size_gib * GiB),
                "is_a_snapshot": False,
                "VBDs": [],
            },
        )
        return str(self.store.get("VDI", ref)["uuid"])

    def host_ref(self, name: str) -> str:
        return self.store.find("host", name_label=name)[0]

    def vm_uuid_tagged(self, value: str) -> str:
        """The XAPI uuid of the VM whose other_config holds ``value`` (a client's own id)."""
        with self.store.lock:
            for vm in self.store.tables["VM"].values():
                if value in vm["other_config"].values() and not vm["is_a_snapshot"]:
                    return str(vm["uuid"])
        raise LookupError(value)

    def guest_powers_off(self, vm_uuid: str) -> None:
        """The guest shuts itself down (from inside), as a user would."""
        ref = self.store.find("VM", uuid=vm_uuid)[0]
        with self.store.lock:
            self._set_power(ref, "Halted")
