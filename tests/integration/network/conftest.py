"""A network namespace with a bridge, made for one test and removed after it, and diskless QEMU
guests (TCG: under this machine's nested KVM the iPXE ROM hangs) plugged into the bridge
through a tap, booting their NIC's iPXE ROM, which asks DHCP for an address. The test's
processes are stopped by PID; the namespace is deleted with everything in it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from cloudcore.store.records import new_id
from tests.cloud import sqlite_store  # noqa: F401 - fixtures
from tests.integration.libvirt.conftest import libvirtd  # noqa: F401 - fixtures

NEEDS = ("ip", "dnsmasq", "qemu-system-x86_64")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Netns:
    name: str
    bridge: str
    workdir: Path
    guests: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def boot_guest(self, mac: str) -> subprocess.Popen[bytes]:
        """A diskless guest whose NIC (``mac``) boots iPXE on the bridge."""
        n = len(self.guests)
        tap = f"cct{n}"
        _ip("-n", self.name, "tuntap", "add", "dev", tap, "mode", "tap")
        _ip("-n", self.name, "link", "set", tap, "master", self.bridge, "up")
        serial = self.workdir / f"guest{n}.serial"
        with (self.workdir / f"guest{n}.log").open("wb") as log:
            guest = self._qemu(tap, serial, mac, log)
        self.guests.append(guest)
        return guest

    def _qemu(self, tap: str, serial: Path, mac: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "ip", "netns", "exec", self.name, "qemu-system-x86_64",
                "-machine", "pc,accel=tcg", "-m", "128", "-display", "none", "-nodefaults",
                "-serial", f"file:{serial}",
                "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
                "-boot", "n",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces and taps need root"
    for tool in NEEDS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test installs it: ensure_dhcp)"
    return None


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    reason = _missing()
    if reason is not None:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    name = f"cct-{new_id()[-10:]}"
    _ip("netns", "add", name)
    space = Netns(name=name, bridge="ccbr0", workdir=tmp_path)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", space.bridge, "type", "bridge")
        _ip("-n", name, "addr", "add", "10.77.0.1/24", "dev", space.bridge)
        _ip("-n", name, "link", "set", space.bridge, "up")
        yield space
    finally:
        for guest in space.guests:
            guest.kill()  # `ip netns exec` execs QEMU: this PID is QEMU's
            with contextlib.suppress(subprocess.TimeoutExpired):
                guest.wait(10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
