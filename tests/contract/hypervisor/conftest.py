"""The hypervisor contract suite runs every test on every backend in ``BACKENDS``.

- ``libvirt-test``: the libvirt driver on a libvirt test-driver host generated for the test (an
  independent in-memory hypervisor per connection).
- ``vsphere-vcsim``: the vSphere driver on one ESXi host of VMware's vCenter simulator (one vcsim
  per session; each test takes an ESXi host no other test used, so it starts empty).
- ``xenserver-sim``: the XenServer driver against the XAPI simulator in ``tests/simulators/xapi``
  (a fresh two-host pool per test, driven through the real ``XenAPI.Session`` over loopback).
- ``hyperv-sim``: the Hyper-V driver against the WinRM simulator in ``tests/simulators/winrm`` (a
  fresh host per test, driven through the real pywinrm ``Session`` over loopback, Basic auth).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from hypervisor_drivers.base import DriverSettings, NicSpec
from hypervisor_drivers.hyperv import HyperVDriver
from hypervisor_drivers.libvirt import write_simulated_host
from hypervisor_drivers.registry import create_driver
from hypervisor_drivers.xenserver import XenServerDriver
from tests import vcsim
from tests.contract.hypervisor.harness import Harness
from tests.simulators.winrm import HyperVHost, running_winrm
from tests.simulators.xapi import Xapi, running_xapi

HOST_CPUS = 8
HOST_MEMORY_KIB = 16 * 1024 * 1024
VCSIM_HOSTS = 64  # ESXi hosts in the simulator's cluster: more than the suite's tests
XEN_NETWORK = "Pool-wide network associated with eth0"


def _network(key: str, name: str) -> NicSpec:
    """A cloud network whose bridge the backend does not know, named for it in ``extra``."""
    return NicSpec(kind="bridge", source="br-cc", extra={key: name})


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


@contextlib.asynccontextmanager
async def _xenserver_simulator(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    xapi = Xapi(host_cpus=HOST_CPUS, host_memory_kib=HOST_MEMORY_KIB)
    with running_xapi(xapi) as server:
        settings = DriverSettings(
            uri=server.url, username="root", password="secret", extra={"host": "xs-host-1"}
        )
        driver = XenServerDriver(settings)
        await driver.connect()
        try:
            # Disks name VDIs on the host's SR: the harness makes them, as storage would.
            yield Harness(
                driver,
                HOST_CPUS,
                HOST_MEMORY_KIB,
                disk_path=lambda v: xapi.add_vdi(f"disk-{v}"),
                unreachable=DriverSettings(uri="http://127.0.0.1:9", password="x"),
                network=_network("xenserver.network", XEN_NETWORK),
                network_name=XEN_NETWORK,
            )
        finally:
            await driver.close()


def hyperv_settings(url: str, **extra: str) -> DriverSettings:
    """Settings for the WinRM simulator: Basic auth over loopback HTTP, fast polling."""
    return DriverSettings(
        uri=url,
        username="Administrator",
        password="Passw0rd!",
        extra={"transport": "basic", "poll_interval": "0.2", "timeout": "5", **extra},
    )


@contextlib.asynccontextmanager
async def _hyperv_simulator(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    host = HyperVHost("HV01", cpus=HOST_CPUS, memory_kib=HOST_MEMORY_KIB)
    with running_winrm(host) as server:
        driver = HyperVDriver(hyperv_settings(server.url))
        await driver.connect()
        try:
            yield Harness(
                driver,
                HOST_CPUS,
                HOST_MEMORY_KIB,
                disk_path=lambda v: f"C:\\VMs\\{v}.vhdx",
                unreachable=hyperv_settings("http://127.0.0.1:9/wsman"),
                network=_network("hyperv.switch", "External"),
                network_name="External",
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
            network=_network("vsphere.portgroup", "VM Network"),
            network_name="VM Network",
        )
    finally:
        await driver.close()


BACKENDS: dict[
    str, Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[Harness]]
] = {
    "libvirt-test": _libvirt_test_host,
    "vsphere-vcsim": _vsphere_vcsim_host,
    "xenserver-sim": _xenserver_simulator,
    "hyperv-sim": _hyperv_simulator,
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
