"""An orchestrator on the libvirt test driver, with a SQLite store: the harness of the
component tests of the orchestrator and the gateway, and of the orchestrator's integration tests
on a real libvirtd (which give it hosts of their own). A conftest imports the fixtures it needs.

Each simulated host is a real libvirt test-driver connection (``test:///<file>.xml``), an
in-memory hypervisor of its own. ``drivers`` gives tests the very driver a host actor uses, so a
test can act behind the orchestrator's back, as an administrator with virsh would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.orchestrator import Orchestrator
from actors.registration import bootstrap_demo
from actors.services import Services, default_driver
from actors.template_disks import TemplateDisks
from cloudcore.app.node import start_storage
from cloudcore.config import DemoSettings, OrchestratorSettings, Settings
from cloudcore.events import EventBus
from cloudcore.events.local import LocalEventBus
from cloudcore.events.relay import OutboxRelayActor
from cloudcore.runtime import ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import Host, HostHealth, Task
from hypervisor_drivers.base import HypervisorDriver
from tests.waiting import eventually


@dataclass
class Cloud:
    orchestrator: Orchestrator
    store: Store
    settings: Settings
    drivers: dict[str, HypervisorDriver] = field(default_factory=dict)

    async def wait(self, task: Task, timeout: float = 20.0) -> Task:
        return await self.orchestrator.wait(task.id, timeout)


def cloud_settings(tmp_path: Path, **orchestrator: Any) -> Settings:
    return Settings(
        node=msgspec.structs.replace(Settings().node, data_dir=str(tmp_path)),
        orchestrator=OrchestratorSettings(
            **{
                "stop_timeout": 0.5,
                "sweep_interval": 3600.0,
                "step_deadline": 20.0,
                "schedule_attempts": 2,
                **orchestrator,
            }
        ),
        demo=DemoSettings(hosts=2, host_cpus=4, host_memory_mib=4096),
    )


async def start_cloud(
    store: Store,
    settings: Settings,
    drivers: dict[str, HypervisorDriver],
    bus: EventBus | None = None,
    disks: TemplateDisks | None = None,
) -> tuple[ActorSystem, Orchestrator]:
    """An orchestrator on ``store``, its events relayed to ``bus`` (a new in-process one)."""

    def factory(host: Host) -> HypervisorDriver:
        drivers[host.id] = default_driver(host)  # the latest: a lost connection gets a new one
        return drivers[host.id]

    system = ActorSystem("test-node", settings.runtime)
    services = Services(
        store, bus or LocalEventBus(), settings.orchestrator, driver_factory=factory, disks=disks
    )
    system.spawn(OutboxRelayActor, store, services.events, name="outbox-relay")
    orchestrator = await Orchestrator.start(system, services)
    orchestrator.storage = await start_storage(system, services, settings)

    async def healthy() -> bool:
        page = await store.list(Host, limit=100)
        return all(h.health is HostHealth.HEALTHY for h in page.items)

    await eventually(healthy)
    return system, orchestrator


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    from cloudcore.store.sqlite import SqliteStore

    store = await SqliteStore.connect(tmp_path / "cloudcore.db")
    await store.upgrade()
    yield store
    await store.close()


@pytest.fixture
async def cloud(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    settings = cloud_settings(tmp_path)
    await bootstrap_demo(sqlite_store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    yield Cloud(orchestrator, sqlite_store, settings, drivers)
    await system.shutdown()
