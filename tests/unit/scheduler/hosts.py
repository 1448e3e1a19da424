"""Host and VM records for the scheduler tests, so each test states only what it is about."""

from __future__ import annotations

from typing import Any

from cloudcore.store.records import VM, Host, HostHealth, VMSpec

DC = "dc1"


def host(host_id: str, **fields: Any) -> Host:
    """A healthy, enabled host of DC with 16 CPUs and 32 GiB allocatable, nothing claimed."""
    values: dict[str, Any] = {
        "datacenter_id": DC,
        "name": host_id,
        "hypervisor": "kvm",
        "cpus": 16,
        "memory_mib": 32768,
        "health": HostHealth.HEALTHY,
        "version": 1,
    }
    values.update(fields)
    return Host(id=host_id, **values)


def vm(vm_id: str, cpus: int = 2, memory_mib: int = 4096, **spec: Any) -> VM:
    """A VM of tenant t1 in DC; ``spec`` goes to VMSpec (affinity_group, extra)."""
    tenant = spec.pop("tenant_id", "t1")
    return VM(
        id=vm_id,
        tenant_id=tenant,
        datacenter_id=spec.pop("datacenter_id", DC),
        name=vm_id,
        spec=VMSpec(cpus=cpus, memory_mib=memory_mib, **spec),
    )
