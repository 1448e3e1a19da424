"""The Hyper-V hypervisor driver (PowerShell over WinRM through pywinrm)."""

from __future__ import annotations

from hypervisor_drivers.hyperv.driver import HyperVDriver

__all__ = ["HyperVDriver"]
