"""VMware's vCenter simulator (vcsim, built by ``scripts/lib.sh``'s ``ensure_vcsim``) as a test
fixture: started on a free loopback port, stopped by its PID.

The binary is ``$VCSIM_BIN`` (``scripts/test`` exports it), else the newest one in the build
cache. Without one the vSphere tests are skipped with the way to build it; with ``VCSIM_BIN``
set to a missing file they fail, so CI cannot skip them by accident.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from hypervisor_drivers.types import DriverSettings

USER_ENV, PASSWORD_ENV = "CLOUDCORE_TEST_VCSIM_USER", "CLOUDCORE_TEST_VCSIM_PASSWORD"
#: Every vcsim ESXi host has this hardware (govmomi's simulator/esx/host_hardware_info.go).
HOST_CPUS = 2
HOST_MEMORY_KIB = 4294430720 // 1024
DATASTORE = "LocalDS_0"
_CACHES = (Path("/var/cache/cloudcore"), Path.home() / ".cache" / "cloudcore")
_START_TIMEOUT = 30


def vcsim_binary() -> Path | None:
    named = os.environ.get("VCSIM_BIN")
    if named:
        return Path(named)
    built = [p for cache in _CACHES if cache.is_dir() for p in cache.glob("vcsim-*")]
    return max(built, key=lambda p: p.stat().st_mtime) if built else None


@dataclass
class Vcsim:
    """A running vcsim: its SDK URL (no credentials in it) and its process."""

    process: subprocess.Popen[str]
    uri: str
    username: str
    password: str

    @property
    def port(self) -> int:
        return urlsplit(self.uri).port or 443

    def settings(self, host: str, **extra: str) -> DriverSettings:
        """Driver settings for one of its ESXi hosts; TLS verification off unless ``extra``
        says otherwise (vcsim's certificate is self-signed)."""
        values = {
            "host": host,
            "datastore": DATASTORE,
            "verify_tls": "false",
            "username_env": USER_ENV,
            "password_env": PASSWORD_ENV,
        }
        values.update(extra)
        return DriverSettings(uri=self.uri, extra=values)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_vcsim(*args: str, port: int = 0) -> Vcsim:
    """Start vcsim with ``args`` (see scripts/vcsim/main.go) and wait for its URL line."""
    binary = vcsim_binary()
    if binary is None:
        pytest.skip("vcsim is not built: run `source scripts/lib.sh && ensure_vcsim`")
    if not binary.is_file():
        pytest.fail(f"VCSIM_BIN={binary} does not exist")
    process = subprocess.Popen(
        [str(binary), "-l", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()  # printed once the server listens
    if not line.startswith("VCSIM_URL="):
        process.kill()
        process.wait()
        pytest.fail(f"vcsim did not start: {line!r}")
    url = urlsplit(line.removeprefix("VCSIM_URL="))
    return Vcsim(
        process=process,
        uri=f"https://{url.hostname}:{url.port}{url.path}",
        username=url.username or "",
        password=url.password or "",
    )


@contextlib.contextmanager
def running_vcsim(*args: str, port: int = 0) -> Iterator[Vcsim]:
    """A started vcsim whose credentials are in the environment, stopped at the end."""
    sim = start_vcsim(*args, port=port)
    os.environ[USER_ENV], os.environ[PASSWORD_ENV] = sim.username, sim.password
    try:
        yield sim
    finally:
        sim.stop()


@contextlib.contextmanager
def service_instance(sim: Vcsim) -> Iterator[Any]:
    """A pyvmomi session of the test's own: to act behind the orchestrator's back, as an
    administrator with the vSphere client would."""
    from pyVim.connect import Disconnect, SmartConnect

    url = urlsplit(sim.uri)
    si = SmartConnect(
        host=url.hostname,
        port=url.port,
        user=sim.username,
        pwd=sim.password,
        disableSslCertValidation=True,
    )
    try:
        yield si
    finally:
        Disconnect(si)


def host_registration(
    sim: Vcsim, host: str, *, host_id: str, datacenter_id: str, **extra: str
) -> dict[str, Any]:
    """The body of ``POST /api/v1/hosts`` for one of vcsim's ESXi hosts: hypervisor
    ``vsphere``, the SDK URL as address, the driver's settings as ``driver.*`` capabilities
    (the credentials stay in the environment variables they name)."""
    settings = sim.settings(host, **extra)
    return {
        "id": host_id,
        "datacenter_id": datacenter_id,
        "hypervisor": "vsphere",
        "address": settings.uri,
        "cpus": HOST_CPUS,
        "memory_mib": HOST_MEMORY_KIB // 1024,
        "capabilities": {f"driver.{key}": value for key, value in settings.extra.items()},
    }


def datastore_dir(sim: Vcsim, name: str = DATASTORE) -> Path:
    """The local directory behind one of vcsim's datastores (its ``info.url``)."""
    from pyVmomi import vim

    with service_instance(sim) as si:
        view = si.content.viewManager.CreateContainerView(
            si.content.rootFolder, [vim.Datastore], True
        )
        found = [ds.info.url for ds in view.view if ds.name == name]
        view.Destroy()
    return Path(found[0])
