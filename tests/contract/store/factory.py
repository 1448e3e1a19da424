"""Builds valid records for the store tests, so each test states only what it is about."""

from __future__ import annotations

from typing import Any

from cloudcore.store.base import Store
from cloudcore.store.records import (
    VM,
    Datacenter,
    Host,
    HostHealth,
    Network,
    Task,
    Tenant,
    VMSpec,
    new_id,
)


class Factory:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n}"

    async def tenant(self, **fields: Any) -> Tenant:
        return await self.store.create(
            Tenant(id=new_id("t-"), name=fields.pop("name", self._name("tenant")), **fields)
        )

    async def datacenter(self) -> Datacenter:
        return await self.store.create(Datacenter(id=new_id("dc-"), name=self._name("dc")))

    async def host(self, dc: Datacenter, **fields: Any) -> Host:
        values: dict[str, Any] = {
            "name": self._name("host"),
            "hypervisor": "kvm",
            "cpus": 8,
            "memory_mib": 16384,
            "health": HostHealth.HEALTHY,
        }
        values.update(fields)
        return await self.store.create(Host(id=new_id("h-"), datacenter_id=dc.id, **values))

    async def vm(self, tenant: Tenant, dc: Datacenter, **fields: Any) -> VM:
        values: dict[str, Any] = {
            "name": self._name("vm"),
            "spec": VMSpec(cpus=2, memory_mib=2048),
        }
        values.update(fields)
        return await self.store.create(
            VM(id=new_id("vm-"), tenant_id=tenant.id, datacenter_id=dc.id, **values)
        )

    async def network(self, dc: Datacenter) -> Network:
        return await self.store.create(
            Network(
                id=new_id("net-"), datacenter_id=dc.id, name=self._name("net"), cidr="10.0.0.0/24"
            )
        )

    async def task(self, subject: str = "vm/x", **fields: Any) -> Task:
        values: dict[str, Any] = {"id": new_id("task-"), "kind": "create_vm"}
        values.update(fields)
        return await self.store.create(Task(subject=subject, **values))
