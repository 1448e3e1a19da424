"""vSphere power states in cloudcore's terms. vSphere has no paused state."""

from __future__ import annotations

from typing import Any

from cloudcore.errors import IllegalTransition
from hypervisor_drivers.types import GuestPower

__all__ = ["POWER", "require_power"]

POWER = {
    "poweredOn": GuestPower.RUNNING,
    "poweredOff": GuestPower.STOPPED,
    "suspended": GuestPower.SUSPENDED,
}


def require_power(vm: Any, allowed: set[GuestPower], action: str) -> GuestPower:
    """The VM's power state; ``IllegalTransition`` when it is not in ``allowed``."""
    power = POWER.get(str(vm.runtime.powerState), GuestPower.UNKNOWN)
    if power not in allowed:
        raise IllegalTransition(f"cannot {action} VM {vm.config.instanceUuid}: it is {power.value}")
    return power
