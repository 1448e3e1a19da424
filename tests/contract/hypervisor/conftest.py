"""The hypervisor contract suite runs every test on every backend in ``BACKENDS``.

- ``libvirt-test``: the libvirt driver on a libvirt test-driver host generated for the test (an
  independent in-memory hypervisor per connection).
- ``vsphere-vcsim``: the vSphere driver on one ESXi host of VMware's vCenter simulator (one vcsim
  per session; each test takes an ESXi host no other test used, so it starts empty).

XenServer and Hyper-V (protocol simulators) join by adding a factory here.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from hypervisor_drivers.base import DriverSettings
from hypervisor_drivers.libvirt import write_simulated_host
from hypervisor_drivers.registry import create_driver
from tests import vcsim
from tests.contract.hypervisor.harness import Harness

HOST_CPUS = 8
HOST_MEMORY_KIB = 16 * 1024 * 1024
VCSIM_HOSTS = 64  # ESXi hosts in the simulator's cluster: more than the suite's tests


@contextlib.asynccontextmanager
async def _libvirt_test_host(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    uri = write_simulated_host(tmp_path / "host.xml", cpus=HOST_CPUS, memory_kib=HOST_MEMORY_KIB)
    driver = create_driver("libvirt", DriverSettings(uri=uri))
    await driver.connect()
    try:
        # The test driver never opens disk images: any path will do.
        yield Harness(
            driver,
            HOST_CPUS,
            HOST_MEMORY_KIB,
            disk_path=lambda v: f"/images/{v}.qcow2",
            unreachable=DriverSettings(uri=f"qemu+unix:///system?socket={tmp_path}/none.sock"),
        )
    finally:
        await driver.close()


class VcsimHosts:
    """The session's vcsim and a supply of ESXi hosts no test has used yet."""

    def __init__(self, sim: vcsim.Vcsim) -> None:
        self.sim = sim
        self.datastore = vcsim.datastore_dir(sim)
        self._names = (f"DC0_C0_H{i}" for i in itertools.count())

    def fresh_host(self) -> str:
        return next(self._names)

    def disk_path(self, volume: str) -> str:
        """A datastore path to a disk that exists, as vSphere requires: an (empty) descriptor
        and its flat extent, which is what vcsim checks."""
        (self.datastore / f"{volume}.vmdk").touch()
        (self.datastore / f"{volume}-flat.vmdk").touch()
        return f"[{vcsim.DATASTORE}] {volume}.vmdk"


@pytest.fixture(scope="session")
def vcsim_hosts() -> Iterator[VcsimHosts]:
    with vcsim.running_vcsim("-cluster-host", str(VCSIM_HOSTS)) as sim:
        yield VcsimHosts(sim)


@contextlib.asynccontextmanager
async def _vsphere_vcsim_host(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    pytest.importorskip("pyVmomi", reason="the vsphere extra (pyvmomi) is not installed")
    hosts: VcsimHosts = request.getfixturevalue("vcsim_hosts")
    driver = create_driver("vsphere", hosts.sim.settings(hosts.fresh_host()))
    await driver.connect()
    try:
        yield Harness(
            driver,
            vcsim.HOST_CPUS,
            vcsim.HOST_MEMORY_KIB,
            disk_path=hosts.disk_path,
            unreachable=vcsim.Vcsim(
                process=hosts.sim.process, uri="https://127.0.0.1:1/sdk", username="", password=""
            ).settings("DC0_C0_H0"),
        )
    finally:
        await driver.close()


BACKENDS: dict[
    str, Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[Harness]]
] = {
    "libvirt-test": _libvirt_test_host,
    "vsphere-vcsim": _vsphere_vcsim_host,
}


@pytest.fixture(params=sorted(BACKENDS))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A connected driver on an empty host, for each backend in turn."""
    async with BACKENDS[request.param](request, tmp_path) as h:
        try:
            yield h
        finally:
            for vm_uuid in h.created:
                with contextlib.suppress(Exception):
                    await h.driver.destroy_vm(vm_uuid)
