"""The XenServer / XCP-ng hypervisor driver (XAPI through the XenAPI client library)."""

from __future__ import annotations

from hypervisor_drivers.xenserver.driver import XenServerDriver

__all__ = ["XenServerDriver"]
