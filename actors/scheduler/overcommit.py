"""Overcommit: how much a host may promise, from what it physically has.

A :class:`~cloudcore.store.records.Host` record's ``cpus`` and ``memory_mib`` are its
*allocatable* capacity, physical capacity times the datacenter's overcommit ratios. The host actor
computes them with :func:`allocatable` when it registers the host, and keeps the physical values in
``Host.capabilities`` under :data:`PHYSICAL_CPUS` and :data:`PHYSICAL_MEMORY_MIB`. Everything
downstream (the store's atomic claim, the scheduler's capacity filter) compares claims with the
allocatable values only, so the ratios are applied in exactly one place.
"""

from __future__ import annotations

import math

from cloudcore.errors import ConfigError, InvalidRecord
from cloudcore.store.records import Host

__all__ = ["PHYSICAL_CPUS", "PHYSICAL_MEMORY_MIB", "allocatable", "physical_cpus"]

#: ``Host.capabilities`` key of the host's physical CPU count (a decimal string).
PHYSICAL_CPUS = "physical_cpus"
#: ``Host.capabilities`` key of the host's physical memory in MiB (a decimal string).
PHYSICAL_MEMORY_MIB = "physical_memory_mib"


def allocatable(
    physical_cpus: int, physical_memory_mib: int, cpu_ratio: float, memory_ratio: float
) -> tuple[int, int]:
    """The ``(cpus, memory_mib)`` a host may hand out: physical times ratio, rounded down.

    A ratio of 4.0 lets four vCPUs share one core; 1.0 means no overcommit; below 1.0 keeps a
    reserve (0.9 holds back a tenth for the hypervisor). Raises ConfigError (a ValueError) if a
    ratio is not a finite number above zero, InvalidRecord (a ValueError) if a physical amount is
    negative.
    """
    for name, ratio in (("cpu_ratio", cpu_ratio), ("memory_ratio", memory_ratio)):
        if not (isinstance(ratio, int | float) and math.isfinite(ratio) and ratio > 0):
            raise ConfigError(f"{name} must be a finite number above 0, got {ratio!r}")
    for name, amount in (
        ("physical_cpus", physical_cpus),
        ("physical_memory_mib", physical_memory_mib),
    ):
        if amount < 0:
            raise InvalidRecord(f"{name} must be 0 or more, got {amount}")
    # The epsilon keeps 3 x 1.1 = 3.3000000000000003 from rounding up and 10 x 0.3 = 2.9999... from
    # rounding down a whole vCPU.
    return (
        math.floor(physical_cpus * cpu_ratio + 1e-9),
        math.floor(physical_memory_mib * memory_ratio + 1e-9),
    )


def physical_cpus(host: Host) -> int | None:
    """The host's physical CPU count from its capabilities, or None if not recorded (or bad)."""
    text = host.capabilities.get(PHYSICAL_CPUS)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None
