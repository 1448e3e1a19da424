"""The hypervisor contract suite runs every test on every backend in ``BACKENDS``.

Today: the libvirt driver on a libvirt test-driver host generated for the test (an independent
in-memory hypervisor per connection); the XenServer driver against the XAPI simulator in
``tests/simulators/xapi`` (a fresh two-host pool per test, driven through the real
``XenAPI.Session`` over loopback HTTP); the Hyper-V driver against the WinRM simulator in
``tests/simulators/winrm`` (a fresh host per test, driven through the real pywinrm ``Session``
over loopback HTTP with Basic auth). vSphere (vcsim) joins by adding a factory here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from hypervisor_drivers.base import DriverSettings
from hypervisor_drivers.hyperv import HyperVDriver
from hypervisor_drivers.libvirt import write_simulated_host
from hypervisor_drivers.registry import create_driver
from hypervisor_drivers.xenserver import XenServerDriver
from tests.contract.hypervisor.harness import Harness
from tests.simulators.winrm import HyperVHost, running_winrm
from tests.simulators.xapi import Xapi, running_xapi

HOST_CPUS = 8
HOST_MEMORY_KIB = 16 * 1024 * 1024


@contextlib.asynccontextmanager
async def _libvirt_test_host(tmp_path: Path) -> AsyncIterator[Harness]:
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
async def _xenserver_simulator(tmp_path: Path) -> AsyncIterator[Harness]:
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
async def _hyperv_simulator(tmp_path: Path) -> AsyncIterator[Harness]:
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
            )
        finally:
            await driver.close()


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Harness]]] = {
    "libvirt-test": _libvirt_test_host,
    "xenserver-sim": _xenserver_simulator,
    "hyperv-sim": _hyperv_simulator,
}


@pytest.fixture(params=sorted(BACKENDS))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A connected driver on an empty host, for each backend in turn."""
    async with BACKENDS[request.param](tmp_path) as h:
        try:
            yield h
        finally:
            for vm_uuid in h.created:
                with contextlib.suppress(Exception):
                    await h.driver.destroy_vm(vm_uuid)
