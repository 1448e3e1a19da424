"""Records for the scheduler's integration tests, stored with fresh ids."""

from __future__ import annotations

from typing import Any

from actors.scheduler import PHYSICAL_CPUS, PHYSICAL_MEMORY_MIB, allocatable
from cloudcore.store.base import Store
from cloudcore.store.records import VM, Datacenter, Host, HostHealth, Tenant, VMSpec, new_id


class World:
    """One tenant and one datacenter of a test, and the hosts and VMs it adds to them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tenant: Tenant
        self.dc: Datacenter

    async def start(self) -> World:
        self.tenant = await self.store.create(Tenant(id=new_id("t-"), name=new_id("tenant-")))
        self.dc = await self.store.create(Datacenter(id=new_id("dc-"), name=new_id("dc-")))
        return self

    async def host(
        self,
        physical_cpus: int = 4,
        physical_memory_mib: int = 8192,
        *,
        cpu_ratio: float = 2.0,
        memory_ratio: float = 1.0,
        **fields: Any,
    ) -> Host:
        """A host registered as the host actor does: allocatable capacity, physical recorded."""
        cpus, memory = allocatable(physical_cpus, physical_memory_mib, cpu_ratio, memory_ratio)
        values: dict[str, Any] = {
            "datacenter_id": self.dc.id,
            "name": new_id("host-"),
            "hypervisor": "kvm",
            "cpus": cpus,
            "memory_mib": memory,
            "health": HostHealth.HEALTHY,
            "capabilities": {
                PHYSICAL_CPUS: str(physical_cpus),
                PHYSICAL_MEMORY_MIB: str(physical_memory_mib),
            },
        }
        values.update(fields)
        return await self.store.create(Host(id=new_id("h-"), **values))

    async def vm(self, cpus: int = 1, memory_mib: int = 2048, **spec: Any) -> VM:
        return await self.store.create(
            VM(
                id=new_id("vm-"),
                tenant_id=self.tenant.id,
                datacenter_id=self.dc.id,
                name=new_id("vm-"),
                spec=VMSpec(cpus=cpus, memory_mib=memory_mib, **spec),
            )
        )
