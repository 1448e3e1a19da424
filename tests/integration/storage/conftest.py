"""Volumes on real components: a private tgtd (its own control socket and loopback portal) and
real QEMU guests under libvirtd, driven through the orchestrator and the storage actors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from cloudcore.config import PoolSettings, StorageConfig
from cloudcore.store import Store
from cloudcore.store.records import VM
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import Cloud, cloud_settings, sqlite_store, start_cloud  # noqa: F401
from tests.contract.storage.tgtd import Tgtd, why_not_runnable
from tests.integration.libvirt.conftest import domain_type, libvirtd, virsh  # noqa: F401
from tests.integration.orchestrator.test_real_libvirt import _datacenter_on, _forget_vms

POOL = "tgt-pool"


def tgt_pool(tmp_path: Path, tgtd: Tgtd) -> PoolSettings:
    """The tgt pool of dc1, on ``tgtd``, its files under ``tmp_path/pool``."""
    return PoolSettings(
        id=POOL,
        datacenter="dc1",
        driver="tgt",
        path=str(tmp_path / "pool"),
        portal_port=tgtd.portal_port,
        iqn_prefix=f"iqn.2026-12.test.cloudcore.{tmp_path.name[-8:].lower().replace('_', '-')}",
        overcommit=4.0,
        extra={"control_port": str(tgtd.control_port), "timeout_s": "10"},
    )


@pytest.fixture
def tgtd(tmp_path: Path) -> Iterator[Tgtd]:
    """A tgtd of this test's own (a test restarts it)."""
    reason = why_not_runnable()
    if reason is not None:
        pytest.skip(reason)
    daemon = Tgtd(tmp_path)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
async def iscsi_cloud(
    libvirtd: str,  # noqa: F811
    domain_type: str,  # noqa: F811
    sqlite_store: Store,  # noqa: F811
    tgtd: Tgtd,
    tmp_path: Path,
) -> AsyncIterator[Cloud]:
    """Datacenter dc1 with one QEMU host on the real libvirtd and one tgt pool on ``tgtd``,
    checked every second (so a restarted tgtd is noticed)."""
    settings = msgspec.structs.replace(
        cloud_settings(tmp_path, sweep_interval=1.0),
        storage=StorageConfig(pools=[tgt_pool(tmp_path, tgtd)]),
    )
    await _datacenter_on(sqlite_store, settings, libvirtd, domain_type=domain_type)
    drivers: dict[str, HypervisorDriver] = {}
    system, orchestrator = await start_cloud(sqlite_store, settings, drivers)
    cloud = Cloud(orchestrator, sqlite_store, settings, drivers)
    try:
        yield cloud
    finally:
        await system.shutdown()
        page = await sqlite_store.list(VM, limit=1000)
        _forget_vms([vm.id for vm in page.items])
