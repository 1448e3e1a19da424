"""Registering datacenters and hosts, and the demonstration datacenter of ``cloudcore serve``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.scheduler.overcommit import PHYSICAL_CPUS, PHYSICAL_MEMORY_MIB, allocatable
from cloudcore.config import Settings
from cloudcore.errors import NotFound, VersionConflict
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import Datacenter, Host, OutboxEvent, Tenant

__all__ = ["bootstrap_demo", "host_record", "update_host"]

_log = get_logger("actors.registration")


def host_record(
    settings: Settings,
    *,
    host_id: str,
    datacenter_id: str,
    hypervisor: str,
    uri: str,
    physical_cpus: int,
    physical_memory_mib: int,
) -> Host:
    """A host record whose capacity is what it may hand out (physical x overcommit); the
    physical sizes are kept in its capabilities."""
    conf = settings.orchestrator
    cpus, memory = allocatable(
        physical_cpus, physical_memory_mib, conf.cpu_overcommit, conf.memory_overcommit
    )
    return Host(
        id=host_id,
        datacenter_id=datacenter_id,
        name=host_id,
        hypervisor=hypervisor,
        address=uri,
        cpus=cpus,
        memory_mib=memory,
        capabilities={
            PHYSICAL_CPUS: str(physical_cpus),
            PHYSICAL_MEMORY_MIB: str(physical_memory_mib),
        },
    )


async def update_host(
    store: Store, host: Host, *, events: Sequence[OutboxEvent] = (), **changes: Any
) -> Host:
    """Change a host record, with ``events`` in the same transaction. Two writers share it (its
    actor writes health, the operator admin state), so a version conflict reads the record
    again and retries; VersionConflict if it still conflicts after three attempts."""
    for _ in range(2):
        try:
            return await store.update(
                Host, host.id, expected_version=host.version, events=events, **changes
            )
        except VersionConflict:
            host = await store.get(Host, host.id)
    return await store.update(
        Host, host.id, expected_version=host.version, events=events, **changes
    )


async def bootstrap_demo(store: Store, settings: Settings) -> bool:
    """On an empty store, create the demo tenant and a datacenter of simulated libvirt hosts
    (the test driver, one host file each under the data directory). False if the store already
    holds a datacenter. ``demo.datacenter`` may name several, comma-separated: each gets
    ``demo.hosts`` hosts."""
    demo = settings.demo
    if (await store.list(Datacenter, limit=1)).items:
        return False
    try:
        await store.get(Tenant, demo.tenant)
    except NotFound:
        await store.create(Tenant(id=demo.tenant, name=demo.tenant))
    for dc_id in (part.strip() for part in demo.datacenter.split(",") if part.strip()):
        await _demo_datacenter(store, settings, dc_id)
    return True


async def _demo_datacenter(store: Store, settings: Settings, dc_id: str) -> None:
    from hypervisor_drivers.libvirt import write_simulated_host

    demo = settings.demo
    dc = await store.create(Datacenter(id=dc_id, name=dc_id))
    folder = Path(settings.node.data_dir) / "hosts"
    for n in range(1, demo.hosts + 1):
        host_id = f"{dc.id}-h{n}"
        uri = write_simulated_host(
            folder / f"{host_id}.xml", cpus=demo.host_cpus, memory_kib=demo.host_memory_mib * 1024
        )
        await store.create(
            host_record(
                settings,
                host_id=host_id,
                datacenter_id=dc.id,
                hypervisor="libvirt",
                uri=uri,
                physical_cpus=demo.host_cpus,
                physical_memory_mib=demo.host_memory_mib,
            )
        )
    _log.info("demo.created", datacenter=dc.id, hosts=demo.hosts, tenant=demo.tenant)
