"""What counts against a tenant's quotas: one rule, used when a VM is created (the caller hands
its usage to :meth:`Store.create_vm`) and when usage is recomputed from what exists
(:meth:`Store.reconcile_quotas`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudcore.store.records import VMSpec

__all__ = [
    "QUOTA_RESOURCES",
    "RESIZING_KIND",
    "template_usage",
    "vm_usage",
    "vm_usage_resizing",
    "volume_usage",
]

#: The resources a tenant's quotas may limit, each recomputed from what exists.
QUOTA_RESOURCES = (
    "vms",
    "cpus",
    "memory_mib",
    "volumes",
    "volume_gib",
    "public_ips",
    "template_gib",
)

_GIB = 1024**3

#: The task kind of a resize in flight: it has taken the larger size already.
RESIZING_KIND = "vm.reconfigure"


def vm_usage(spec: VMSpec) -> dict[str, int]:
    """What a VM that is not deleted holds."""
    return {"vms": 1, "cpus": spec.cpus, "memory_mib": spec.memory_mib}


def vm_usage_resizing(spec: VMSpec, asked: Mapping[str, Any]) -> dict[str, int]:
    """What a VM with a resize in flight holds: a grow is taken when it is asked for and a
    shrink given back when it has succeeded, so the larger of both sizes, resource by resource.
    ``asked`` is the resize task's data (``cpus``, ``memory_mib``, either may be absent)."""
    held = vm_usage(spec)
    for resource in ("cpus", "memory_mib"):
        value = asked.get(resource)
        if isinstance(value, int) and value > held[resource]:
            held[resource] = value
    return held


def volume_usage(size_gib: int) -> dict[str, int]:
    """What a volume that is not deleted holds (an extend in flight: its new size already)."""
    return {"volumes": 1, "volume_gib": size_gib}


def template_usage(upload_size: int) -> dict[str, int]:
    """What a tenant's template holds: the image it declared (an upload's or import's size,
    kept until the template is deleted), in GiB rounded up."""
    return {"template_gib": -(-upload_size // _GIB)}
