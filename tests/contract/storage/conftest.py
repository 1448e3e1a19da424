"""The storage contract suite runs every test on every backend in ``BACKENDS``.

Today: the tgt driver against a private tgtd (started once per session on a loopback portal port
and its own control socket; each test has its own pool directory and target-name prefix), and
the simulated driver (records only: the initiator-side tests skip for it, saying so). A backend
joins by adding a ``Harness`` factory here. Where tgtd cannot run (not root, tools missing) the
tgt tests skip and say why.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from storage_drivers.base import StorageDriver, StorageSettings
from storage_drivers.simulated import SimulatedStorageDriver
from storage_drivers.tgt import TgtDriver
from tests.contract.storage.harness import Harness
from tests.contract.storage.tgtd import Tgtd, why_not_runnable


@pytest.fixture(scope="session")
def tgtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tgtd]:
    reason = why_not_runnable()
    if reason is not None:
        print(f"storage contract suite on tgt skipped: {reason}")
        pytest.skip(reason)
    daemon = Tgtd(tmp_path_factory.mktemp("tgtd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.asynccontextmanager
async def _tgt(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    daemon: Tgtd = request.getfixturevalue("tgtd")
    prefix = f"iqn.2026-12.test.cloudcore.{uuid.uuid4().hex[:8]}"

    def make() -> StorageDriver:
        return TgtDriver(
            StorageSettings(
                pool=str(tmp_path / "pool"),
                portal_port=daemon.portal_port,
                iqn_prefix=prefix,
                extra={"control_port": str(daemon.control_port), "timeout_s": "10"},
            )
        )

    driver = make()
    await driver.connect()
    yield Harness(driver=driver, make_driver=make, restart_backend=daemon.restart)


@contextlib.asynccontextmanager
async def _simulated(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    def make() -> StorageDriver:
        return SimulatedStorageDriver(StorageSettings(pool=str(tmp_path / "pool")))

    driver = make()
    await driver.connect()
    yield Harness(
        driver=driver,
        make_driver=make,
        restart_backend=lambda: None,  # it never forgets
        no_initiator_side="the simulated storage driver serves no iSCSI portal",
    )


BACKENDS: dict[
    str, Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[Harness]]
] = {"tgt": _tgt, "simulated": _simulated}


@pytest.fixture(params=sorted(BACKENDS))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A connected driver on an empty pool, for each backend in turn; what a test exported is
    unexported and what it created deleted afterwards."""
    async with BACKENDS[request.param](request, tmp_path) as h:
        try:
            yield h
        finally:
            await h.driver.close()
            cleaner = h.make_driver()  # the test may have closed its driver
            await cleaner.connect()
            for volume in await cleaner.list_volumes():
                await cleaner.unexport_volume(volume.volume_id)
                await cleaner.delete_volume(volume.volume_id)
            await cleaner.close()
