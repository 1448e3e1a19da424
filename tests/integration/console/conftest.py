"""The HTTP API in front of an orchestrator whose datacenter ``dc1`` has one real QEMU host
(libvirtd on ``qemu:///system``, started by the libvirt fixtures)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import msgspec
import pytest

from actors.registration import host_record
from cloudcore.app.gateway import Gateway, start_api
from cloudcore.app.gateway.app import bound_port
from cloudcore.config import Settings
from cloudcore.store import Store
from cloudcore.store.records import VM, Datacenter
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import sqlite_store, start_cloud  # noqa: F401 - fixtures
from tests.component.gateway.conftest import ROLES, ApiClient, api_settings, make_user
from tests.integration.libvirt.conftest import domain_type, libvirtd, virsh  # noqa: F401


@pytest.fixture
async def qemu_api(
    libvirtd: str,  # noqa: F811 - the imported fixture
    domain_type: str,  # noqa: F811
    sqlite_store: Store,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[ApiClient]:
    async with serve_qemu_api(sqlite_store, api_settings(tmp_path), libvirtd, domain_type) as api:
        yield api


@asynccontextmanager
async def serve_qemu_api(
    sqlite_store: Store,  # noqa: F811
    settings: Settings,
    libvirtd: str,  # noqa: F811
    domain_type: str,  # noqa: F811
) -> AsyncIterator[ApiClient]:
    """The API of a cloud whose ``dc1`` has one host: the real libvirtd at ``libvirtd``. Its
    VMs are destroyed and undefined afterwards."""
    await sqlite_store.create(Datacenter(id="dc1", name="dc1"))
    host = host_record(
        settings,
        host_id=f"qemu-{os.urandom(3).hex()}",
        datacenter_id="dc1",
        hypervisor="libvirt",
        uri=libvirtd,
        physical_cpus=64,
        physical_memory_mib=65536,
    )
    caps = {**host.capabilities, "driver.domain_type": domain_type}
    await sqlite_store.create(msgspec.structs.replace(host, capabilities=caps))
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    gateway = Gateway.of(settings, system, orchestrator)
    runner = await start_api(gateway)
    try:
        async with aiohttp.ClientSession() as session:
            client = ApiClient(
                f"http://127.0.0.1:{bound_port(runner)}/api/v1",
                session,
                sqlite_store,
                orchestrator,
                system,
                settings,
                drivers=drivers,
                gateway=gateway,
            )
            for who, (tenant, role) in ROLES.items():
                client.users[who], client.tokens[who] = await make_user(
                    sqlite_store, tenant, who, role
                )
            yield client
    finally:
        await runner.cleanup()
        await system.shutdown()
        for vm in (await sqlite_store.list(VM, limit=1000)).items:
            virsh("destroy", f"cc-{vm.id}", check=False)
            virsh("undefine", f"cc-{vm.id}", "--managed-save", "--snapshots-metadata", check=False)
