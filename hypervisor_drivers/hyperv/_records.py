"""Hyper-V replies read into cloudcore values: every field checked, a wrong one named.

``ConvertTo-Json`` writes ``VMState`` as a number, a ``Guid`` as a string (or ``{"Guid": ...}``),
dates as ``/Date(ms)/`` (Windows PowerShell) or ISO 8601 (PowerShell 7).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import Any

from cloudcore.errors import ConfigError, DriverError
from hypervisor_drivers.hyperv._errors import MALFORMED
from hypervisor_drivers.types import DriverSettings, GuestPower, VMInfo

__all__ = ["MiB", "date", "field", "notes", "password", "power", "username", "vm_info"]

MiB = 1024 * 1024
# VMState as ConvertTo-Json writes it (a number), and as its name; transitional states read as
# the state the guest is still in.
_STATES: dict[object, GuestPower] = {
    2: GuestPower.RUNNING,
    3: GuestPower.STOPPED,
    4: GuestPower.RUNNING,  # Stopping
    6: GuestPower.SUSPENDED,  # Saved
    9: GuestPower.PAUSED,
    10: GuestPower.RUNNING,  # Starting
    32773: GuestPower.RUNNING,  # Saving
    32776: GuestPower.RUNNING,  # Pausing
    32777: GuestPower.PAUSED,  # Resuming
}
_STATES.update({"Running": GuestPower.RUNNING, "Off": GuestPower.STOPPED})
_STATES.update({"Saved": GuestPower.SUSPENDED, "Paused": GuestPower.PAUSED})


def field(obj: Any, name: str, kind: type, what: str) -> Any:
    value = obj.get(name) if isinstance(obj, dict) else None
    if kind is str and isinstance(value, dict) and "Guid" in value:  # a Guid, in some versions
        value = value["Guid"]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DriverError(
            f"malformed reply from Hyper-V: {what} has {name}={value!r}, expected {kind.__name__}",
            code=MALFORMED,
        )
    return value


def notes(vm: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = json.loads(vm.get("Notes") or "{}")
    except ValueError:
        return {}  # notes someone wrote by hand: not ours
    return parsed if isinstance(parsed, dict) else {}


def power(vm: dict[str, Any]) -> GuestPower:
    return _STATES.get(vm.get("State"), GuestPower.UNKNOWN)


def vm_info(vm: dict[str, Any]) -> VMInfo:
    vm_id = field(vm, "Id", str, "a VM")
    return VMInfo(
        uuid=str(notes(vm).get("cloudcore_uuid") or vm_id).lower(),
        name=field(vm, "Name", str, "a VM"),
        power=power(vm),
        vcpus=field(vm, "ProcessorCount", int, "a VM"),
        memory_mib=field(vm, "MemoryStartup", int, "a VM") // MiB,
    )


def date(value: Any) -> datetime:
    if isinstance(value, str) and (m := re.fullmatch(r"/Date\((-?\d+)\)/", value)):
        return datetime.fromtimestamp(int(m.group(1)) / 1000, UTC)
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC)
    except ValueError:
        raise DriverError(f"malformed Hyper-V date {value!r}", code=MALFORMED) from None


def username(settings: DriverSettings) -> str:
    """``settings.username``, else ``extra["username"]`` (a host registered through the API
    carries its driver settings as ``driver.*`` capabilities), else ``Administrator``."""
    return settings.username or settings.extra.get("username") or "Administrator"


def password(settings: DriverSettings) -> str:
    if settings.password is not None:
        return settings.password
    variable = settings.extra.get("password_env")
    if variable is None or variable not in os.environ:
        raise ConfigError("hyperv driver: set password, or extra.password_env to a set variable")
    return os.environ[variable]
