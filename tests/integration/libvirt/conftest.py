"""Real VMs on ``qemu:///system``: libvirtd and virtlogd are started here when they are not
running, and only those are stopped afterwards, by PID, unless another test run is using them
then (other suites share these fixtures); VMs boot from small qcow2 images made
with qemu-img, under KVM when QEMU can use /dev/kvm and under TCG otherwise. The guests have no
operating system: QEMU still runs them, so they can be paused, saved and destroyed, but they
never answer ACPI requests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from hypervisor_drivers.base import DomainSpec, DriverSettings, FileDisk
from hypervisor_drivers.libvirt import LibvirtDriver
from hypervisor_drivers.libvirt._xml import domain_xml

URI = "qemu:///system"
# QEMU runs as libvirt-qemu: images live where it can reach them (pytest's tmp dirs are 0700).
IMAGES = Path("/var/lib/libvirt/images")
DAEMONS = (
    ("virtlogd", Path("/run/libvirt/virtlogd-sock")),
    ("libvirtd", Path("/run/libvirt/libvirt-sock")),
)


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=30
    )


def virt_admin(*args: str) -> str:
    """Run virt-admin (libvirtd's admin interface); its output."""
    return subprocess.run(
        ["virt-admin", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A killed daemon may linger as a zombie: PID 1 of a container does
    not always reap orphans, so zombies count as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _running(daemon: str) -> bool:
    """Whether the system's ``daemon`` runs: the one its pid file in /run names (private
    instances that other tests start, under the same name, have pid files of their own)."""
    try:
        pid = int(Path(f"/run/{daemon}.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    return _alive(pid)


def _wait(predicate: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[str]:
    """``qemu:///system``, with virtlogd and libvirtd running."""
    started: list[int] = []
    for daemon, socket in DAEMONS:
        if shutil.which(daemon) is None:
            pytest.fail(f"{daemon} is not installed: scripts/test installs it")
        if not _running(daemon):
            pidfile = Path(f"/run/{daemon}.pid")
            # Fails when another test run started it meanwhile: then it is theirs to stop.
            if subprocess.run([daemon, "-d"], timeout=30).returncode == 0:
                _wait(lambda p=pidfile: p.exists() and p.read_text().strip(), f"{daemon} started")
                started.append(int(pidfile.read_text()))
        _wait(socket.exists, f"{daemon} listens on {socket}")
    _wait(lambda: virsh("version", check=False).returncode == 0, "libvirtd answered")
    yield URI
    if started and _in_use():
        return  # another test run (or its VMs) uses the daemons now: leave them running
    for pid in reversed(started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _wait(lambda p=pid: not _alive(p), f"PID {pid} exited", timeout=20)


def _in_use() -> bool:
    """Whether libvirtd has clients or running VMs (other test runs share the daemon)."""
    clients = virt_admin("srv-clients-list", "libvirtd").splitlines()[2:]
    running = virsh("list", "--name", check=False).stdout.split()
    return any(line.strip() for line in clients) or bool(running)


def make_image(size: str = "16M") -> Path:
    path = IMAGES / f"cc-test-{uuid.uuid4().hex[:12]}.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True, timeout=30
    )
    return path


@pytest.fixture
def image() -> Iterator[Path]:
    """A fresh, empty qcow2 image, deleted afterwards."""
    path = make_image()
    yield path
    path.unlink(missing_ok=True)


def _forget(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", name, "--managed-save", "--snapshots-metadata", check=False)


@pytest.fixture(scope="session")
def domain_type(libvirtd: str) -> str:
    """``kvm`` when QEMU can use /dev/kvm here, else ``qemu`` (TCG). Decided by booting a probe
    VM, since libvirt lists KVM whenever /dev/kvm exists, even when QEMU may not open it.
    ``CLOUDCORE_TEST_DOMAIN_TYPE=qemu`` forces TCG."""
    forced = os.environ.get("CLOUDCORE_TEST_DOMAIN_TYPE")
    if forced:
        return forced
    path = make_image()
    name = f"cc-test-probe-{uuid.uuid4().hex[:8]}"
    spec = DomainSpec(
        uuid=str(uuid.uuid4()), name=name, vcpus=1, memory_mib=32, disks=[FileDisk(path=str(path))]
    )
    xml = IMAGES / f"{name}.xml"
    xml.write_text(domain_xml(spec, "kvm"))
    try:
        virsh("define", str(xml))
        kvm = virsh("start", name, check=False).returncode == 0
    finally:
        _forget(name)
        xml.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return "kvm" if kvm else "qemu"


@pytest.fixture
async def driver(libvirtd: str, domain_type: str) -> AsyncIterator[LibvirtDriver]:
    d = LibvirtDriver(DriverSettings(uri=libvirtd, extra={"domain_type": domain_type}))
    await d.connect()
    try:
        yield d
    finally:
        await d.close()


class Vms:
    """Makes VM specs with unique names and fresh images; forgets every VM and image after."""

    def __init__(self) -> None:
        self.specs: list[DomainSpec] = []
        self.images: list[Path] = []

    def spec(self, **overrides: object) -> DomainSpec:
        image = make_image()
        self.images.append(image)
        vm_uuid = str(uuid.uuid4())
        values: dict[str, object] = {
            "uuid": vm_uuid,
            "name": f"cc-test-{vm_uuid[:8]}",
            "vcpus": 1,
            "memory_mib": 64,
            "disks": [FileDisk(path=str(image), serial=f"root-{vm_uuid[:8]}")],
        }
        values.update(overrides)
        spec = DomainSpec(**values)  # type: ignore[arg-type]
        self.specs.append(spec)
        return spec

    def image(self) -> Path:
        path = make_image()
        self.images.append(path)
        return path

    def cleanup(self) -> None:
        for spec in self.specs:
            _forget(spec.name)
        for path in self.images:
            path.unlink(missing_ok=True)


@pytest.fixture
def vms(libvirtd: str) -> Iterator[Vms]:
    made = Vms()
    try:
        yield made
    finally:
        made.cleanup()
