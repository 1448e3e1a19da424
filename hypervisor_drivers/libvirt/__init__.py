"""The libvirt hypervisor driver (KVM/QEMU, and libvirt's in-process test hypervisor)."""

from __future__ import annotations

from hypervisor_drivers.libvirt._xml import simulated_host_xml, write_simulated_host
from hypervisor_drivers.libvirt.driver import LibvirtDriver

__all__ = ["LibvirtDriver", "simulated_host_xml", "write_simulated_host"]
