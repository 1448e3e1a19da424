"""The VMware vSphere hypervisor driver: one ESXi host managed by a vCenter, through pyvmomi."""

from __future__ import annotations

from hypervisor_drivers.vsphere.driver import VSphereDriver

__all__ = ["VSphereDriver"]
