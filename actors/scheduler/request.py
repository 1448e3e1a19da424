"""What one placement asks of the scheduler."""

from __future__ import annotations

import msgspec

from actors.scheduler.affinity import Policy, group_key, policy_of
from cloudcore.store.records import VM, VMSpec

__all__ = ["PlacementRequest"]


class PlacementRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The resources, datacenter and affinity group of one VM to place.

    ``group`` is a :func:`~actors.scheduler.affinity.group_key`; ``policy`` is None exactly when
    ``group`` is None.
    """

    cpus: int
    memory_mib: int
    datacenter_id: str
    group: str | None = None
    policy: Policy | None = None
    vm_id: str | None = None

    @classmethod
    def for_vm(cls, vm: VM) -> PlacementRequest:
        """The request that places ``vm``. Raises InvalidRecord for an unknown group policy."""
        return cls.for_spec(
            vm.spec, tenant_id=vm.tenant_id, datacenter_id=vm.datacenter_id, vm_id=vm.id
        )

    @classmethod
    def for_spec(
        cls, spec: VMSpec, *, tenant_id: str, datacenter_id: str, vm_id: str | None = None
    ) -> PlacementRequest:
        """The request of a VM of ``spec`` owned by ``tenant_id``. Raises InvalidRecord for an
        unknown group policy."""
        return cls(
            cpus=spec.cpus,
            memory_mib=spec.memory_mib,
            datacenter_id=datacenter_id,
            group=group_key(tenant_id, spec),
            policy=policy_of(spec),
            vm_id=vm_id,
        )

    def describe(self) -> str:
        """``4 CPUs/8192 MiB in dc1 (anti-affinity group t1/web)``, for messages and logs."""
        text = f"{self.cpus} CPUs/{self.memory_mib} MiB in {self.datacenter_id}"
        if self.group is not None:
            text += f" ({self.policy} group {self.group})"
        return text
