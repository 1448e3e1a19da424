"""What the hypervisor contract suite needs from each backend, and how to wait for events.

A backend joins the suite by adding a ``Harness`` factory to ``BACKENDS`` in ``conftest.py``:
something that connects a driver to a fresh, empty host and knows that host's size.
"""

from __future__ import annotations

import asyncio
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from hypervisor_drivers.base import (
    Capability,
    DomainSpec,
    DriverSettings,
    EventKind,
    EventStream,
    FileDisk,
    GuestPower,
    HypervisorDriver,
    LifecycleEvent,
    NicSpec,
)

EVENT_TIMEOUT = 5.0


@dataclass
class Harness:
    driver: HypervisorDriver
    host_cpus: int
    host_memory_kib: int
    disk_path: Callable[[str], str]  # a disk image path the backend accepts, for a volume id
    unreachable: DriverSettings  # settings of a host that cannot be reached
    #: A cloud network as the driver gets it (a bridge, its backend name in ``extra``), and
    #: the name the backend reports a NIC on it by.
    network: NicSpec = field(default_factory=lambda: NicSpec(kind="bridge", source="br-cc"))
    network_name: str = "br-cc"
    created: list[str] = field(default_factory=list)

    def spec(self, **overrides: object) -> DomainSpec:
        """A small VM with one disk and a unique name; ``overrides`` replace fields."""
        vm_uuid = str(overrides.pop("uuid", uuid_module.uuid4()))
        values: dict[str, object] = {
            "uuid": vm_uuid,
            "name": f"cc-test-{vm_uuid[:8]}",
            "vcpus": 1,
            "memory_mib": 64,
            "disks": [FileDisk(path=self.disk_path(vm_uuid), serial=f"root-{vm_uuid[:8]}")],
        }
        values.update(overrides)
        return DomainSpec(**values)  # type: ignore[arg-type]

    def fresh(self, settings: DriverSettings) -> HypervisorDriver:
        """A new, unconnected driver of the same class (the registry is tested on its own: a
        worktree's entry points are not installed)."""
        return type(self.driver)(settings)

    def needs(self, capability: Capability) -> None:
        """Skip the test when the driver lacks ``capability``."""
        if not self.driver.supports(capability):
            pytest.skip(f"no {capability.value} capability")

    async def define(self, **overrides: object) -> DomainSpec:
        spec = self.spec(**overrides)
        await self.driver.define_vm(spec)
        self.created.append(spec.uuid)
        return spec

    async def running(self, **overrides: object) -> DomainSpec:
        spec = await self.define(**overrides)
        await self.driver.start_vm(spec.uuid)
        return spec


async def next_event(
    events: EventStream,
    vm_uuid: str,
    *,
    kind: EventKind | None = None,
    power: GuestPower | None = None,
    timeout: float = EVENT_TIMEOUT,
) -> LifecycleEvent:
    """The next event of ``vm_uuid`` matching ``kind`` and ``power``; earlier ones are skipped.
    Fails the test when none arrives within ``timeout`` seconds."""
    seen: list[LifecycleEvent] = []
    try:
        async with asyncio.timeout(timeout):
            async for event in events:
                seen.append(event)
                if event.vm_uuid != vm_uuid:
                    continue
                if (kind is None or event.kind is kind) and (power is None or event.power is power):
                    return event
    except TimeoutError:
        pass
    raise AssertionError(
        f"no {kind} event with power {power} for {vm_uuid} within {timeout} s; saw "
        f"{[(e.vm_uuid[:8], e.kind.value, e.power, e.detail) for e in seen]}"
    )
