"""vSphere power states in cloudcore's terms. vSphere has no paused state."""

from __future__ import annotations

from typing import Any

from cloudcore.errors import IllegalTransition
from hypervisor_drivers.types import GuestPower

__all__ = ["POWER", "power_of", "require_power"]

POWER = {
    "poweredOn": GuestPower.RUNNING,
    "poweredOff": GuestPower.STOPPED,
    "suspended": GuestPower.SUSPENDED,
}


def power_of(runtime: Any) -> GuestPower:
    """The power state in a VM's ``runtime`` (a ``vim.vm.RuntimeInfo``)."""
    return POWER.get(str(runtime.powerState), GuestPower.UNKNOWN)


def require_power(uuid: str, power: GuestPower, allowed: set[GuestPower], action: str) -> None:
    """``IllegalTransition`` when ``power``, the VM's state, is not in ``allowed``."""
    if power not in allowed:
        raise IllegalTransition(f"cannot {action} VM {uuid}: it is {power.value}")
