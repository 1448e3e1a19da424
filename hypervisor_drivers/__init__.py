"""Hypervisor driver plugins (libvirt, vSphere, XenServer, Hyper-V)."""
