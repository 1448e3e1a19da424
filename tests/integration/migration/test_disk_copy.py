"""A VM whose disk is local to its host (``/var/lib/libvirt/images`` is a different directory in
each daemon's mount namespace, see conftest) moves with its disk between the two real
libvirtds: live through QEMU's NBD mirror, cold by streaming the file; the data written on the
source is read back from the destination's copy, and the source's copy is gone."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudcore.errors import Conflict
from hypervisor_drivers.libvirt import LibvirtDriver
from hypervisor_drivers.types import DomainSpec, DriverSettings, FileDisk
from tests.integration.migration.conftest import Daemon

_IMAGES = "/var/lib/libvirt/images"  # private to each daemon
_PATTERN = "0xab"
_WRITTEN = "8M"


def _settings(daemon: Daemon, shared: Path) -> DriverSettings:
    extra = {"migration_uri": "tcp://127.0.0.1", "shared_paths": str(shared)}
    return DriverSettings(uri=daemon.uri, extra=extra)


@pytest.fixture
async def source(
    two_libvirtds: tuple[Daemon, Daemon], tmp_path: Path
) -> AsyncIterator[LibvirtDriver]:
    driver = LibvirtDriver(_settings(two_libvirtds[0], tmp_path))
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.close()


def _blank(path: Path, size: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)


def _local_disk(daemon: Daemon, name: str) -> Path:
    """A 64 MiB qcow2 in the daemon's own images directory, the pattern in its first 8 MiB;
    returns where this process sees it."""
    seen = daemon.base / "lib" / "images" / name
    _blank(seen, "64M")
    wrote = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {_PATTERN} 0 {_WRITTEN}", str(seen)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrote.returncode == 0, wrote.stderr
    return seen


def _has_pattern(path: Path) -> bool:
    read = subprocess.run(
        ["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {_PATTERN} 0 {_WRITTEN}", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return read.returncode == 0 and "verification failed" not in read.stdout + read.stderr


async def _vm_with_local_disk(driver: LibvirtDriver, daemon: Daemon, start: bool) -> str:
    vm = str(uuid.uuid4())
    name = f"cc-{vm[:8]}.qcow2"
    _local_disk(daemon, name)
    disk = FileDisk(path=f"{_IMAGES}/{name}", format="qcow2")
    await driver.define_vm(DomainSpec(uuid=vm, name=f"disk-{vm[:8]}", vcpus=1, memory_mib=64,
                                      disks=[disk]))  # fmt: skip
    if start:
        await driver.start_vm(vm)
    return vm


@pytest.mark.parametrize("start", [True, False], ids=["live", "cold"])
async def test_a_vm_with_a_local_disk_moves_with_its_data(
    source: LibvirtDriver, two_libvirtds: tuple[Daemon, Daemon], tmp_path: Path, start: bool
) -> None:
    a, b = two_libvirtds
    vm = await _vm_with_local_disk(source, a, start)
    name = f"cc-{vm[:8]}.qcow2"
    assert not (b.base / "lib" / "images" / name).exists()  # B does not see A's file

    await source.migrate_vm(vm, _settings(b, tmp_path), live=start)

    state = "running" if start else "shut off"
    assert b.state(f"disk-{vm[:8]}") == state and a.state(f"disk-{vm[:8]}") == "absent"
    assert _has_pattern(b.base / "lib" / "images" / name)  # written on A, read on B
    assert not (a.base / "lib" / "images" / name).exists()  # the source's copy removed


async def test_a_file_on_the_destination_is_never_overwritten(
    source: LibvirtDriver, two_libvirtds: tuple[Daemon, Daemon], tmp_path: Path
) -> None:
    a, b = two_libvirtds
    vm = await _vm_with_local_disk(source, a, start=True)
    name = f"cc-{vm[:8]}.qcow2"
    theirs = b.base / "lib" / "images" / name
    _blank(theirs, "1M")

    with pytest.raises(Conflict, match="has a file at"):
        await source.migrate_vm(vm, _settings(b, tmp_path), live=True)

    assert a.state(f"disk-{vm[:8]}") == "running" and b.state(f"disk-{vm[:8]}") == "absent"
    assert _has_pattern(a.base / "lib" / "images" / name)
    assert theirs.stat().st_size < 1 << 20  # B's own file untouched


async def test_disks_on_a_path_both_hosts_share_are_not_copied(
    source: LibvirtDriver, two_libvirtds: tuple[Daemon, Daemon]
) -> None:
    a, b = two_libvirtds
    vm = await _vm_with_local_disk(source, a, start=False)
    images = Path(_IMAGES)  # both say they share it, wrongly: libvirt moves no data then
    shared_source = LibvirtDriver(_settings(a, images))
    await shared_source.connect()
    try:
        await shared_source.migrate_vm(vm, _settings(b, images), live=False)
    finally:
        await shared_source.close()
    name = f"cc-{vm[:8]}.qcow2"
    assert b.state(f"disk-{vm[:8]}") == "shut off"
    assert not (b.base / "lib" / "images" / name).exists()  # nothing copied
    assert (a.base / "lib" / "images" / name).exists()  # nothing removed
