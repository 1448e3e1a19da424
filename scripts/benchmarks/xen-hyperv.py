"""scripts/bench xen-hyperv: a power cycle through each driver against the bare client library.

Prints ONE JSON object. One power cycle is start then a hard stop of a defined VM: through the
driver (``start_vm`` + ``stop_vm(timeout=0)``, idempotent calls) and through the bare client
library with the calls a careful script would make at the least (XenAPI: ``VM.start_on`` +
``VM.hard_shutdown``; pywinrm: ``Start-VM`` + ``Stop-VM -TurnOff`` in two ``run_ps``).

Fairness: each protocol simulator of ``tests/simulators`` runs in a child process (in the
measuring process it would take the GIL from the driver's worker and event threads, a cost a real
server does not put on its client), and driver and raw cycles alternate in blocks of --block
against the same simulator with the driver connected (its event feed running) throughout, so both
sides see the same machine load. Figures are medians over --cycles cycles of each.
Goal: each driver <= 1.3 x raw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))

import winrm  # noqa: E402
import XenAPI  # noqa: E402
from _common import emit  # noqa: E402

from cloudcore.logging import configure_logging  # noqa: E402
from hypervisor_drivers.base import (  # noqa: E402
    DomainSpec,
    DriverSettings,
    FileDisk,
    HypervisorDriver,
)
from hypervisor_drivers.hyperv import HyperVDriver  # noqa: E402
from hypervisor_drivers.hyperv._script import framed  # noqa: E402
from hypervisor_drivers.xenserver import XenServerDriver  # noqa: E402
from tests.simulators.winrm import running_winrm  # noqa: E402
from tests.simulators.xapi import Xapi, running_xapi  # noqa: E402

_WINRM_DISK = "C:\\VMs\\d.vhdx"


def _serve(kind: str, pipe: Connection) -> None:
    """The child process: one simulator until the parent says stop; sends (url, disk) first."""
    configure_logging(level="warning")
    if kind == "xapi":
        xapi = Xapi()
        with running_xapi(xapi) as xen:
            pipe.send((xen.url, xapi.add_vdi("d")))
            pipe.recv()
    else:
        with running_winrm() as server:
            pipe.send((server.url, _WINRM_DISK))
            pipe.recv()


@contextlib.contextmanager
def _simulator(kind: str) -> Iterator[tuple[str, str]]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(kind, child), daemon=True)
    process.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        process.join(10)


def _p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


async def _alternate(
    driver: HypervisorDriver, disk: str, raw_cycle: Callable[[], None], cycles: int, block: int
) -> tuple[float, float]:
    """(driver p50, raw p50) in ms, the two measured in alternating blocks."""
    vm = str(uuid.uuid4())
    await driver.connect()
    try:
        spec = DomainSpec(
            uuid=vm,
            name=f"bench-{vm[:8]}",
            vcpus=1,
            memory_mib=64,
            disks=[FileDisk(path=disk, serial="root")],
        )
        await driver.define_vm(spec)
        driven: list[float] = []
        raw: list[float] = []
        while len(driven) < cycles:
            for _ in range(block):
                started = time.perf_counter()
                await driver.start_vm(vm)
                await driver.stop_vm(vm, timeout=0)
                driven.append(time.perf_counter() - started)
            for _ in range(block):
                started = time.perf_counter()
                raw_cycle()  # blocking, as a bare script is
                raw.append(time.perf_counter() - started)
        await driver.destroy_vm(vm)
    finally:
        await driver.close()
    return _p50_ms(driven), _p50_ms(raw)


def _xen(cycles: int, block: int) -> dict[str, float]:
    with _simulator("xapi") as (url, disk):
        session = XenAPI.Session(url)
        session.xenapi.login_with_password("root", "secret", "2.21", "bench")
        x = session.xenapi
        host = x.pool.get_master(x.pool.get_all()[0])
        vm = x.VM.create(
            {
                "name_label": "raw",
                "memory_static_max": "67108864",
                "memory_dynamic_max": "67108864",
                "memory_dynamic_min": "67108864",
                "memory_static_min": "67108864",
                "VCPUs_max": "1",
                "VCPUs_at_startup": "1",
                "actions_after_shutdown": "destroy",
                "actions_after_reboot": "restart",
                "actions_after_crash": "destroy",
                "HVM_boot_policy": "BIOS order",
                "other_config": {},
                "is_a_template": False,
                "affinity": host,
            }
        )

        def raw_cycle() -> None:
            x.VM.start_on(vm, host, False, False)
            x.VM.hard_shutdown(vm)

        settings = DriverSettings(uri=url, username="root", password="secret")
        driven, raw = asyncio.run(
            _alternate(XenServerDriver(settings), disk, raw_cycle, cycles, block)
        )
        session.xenapi.session.logout()
    return {"xenserver_power_cycle_p50_ms": driven, "xenserver_raw_power_cycle_p50_ms": raw}


def _hyperv(cycles: int, block: int) -> dict[str, float]:
    with _simulator("winrm") as (url, disk):
        session = winrm.Session(
            url,
            auth=("Administrator", "Passw0rd!"),
            transport="basic",
            ca_trust_path=None,
            proxy=None,
        )
        created = session.run_ps(
            framed(
                ["New-VM -Name $a.name -NoVHD | Select-Object Id | ConvertTo-Json -Compress"],
                {"name": "raw"},
            )
        )
        vm_id = created.std_out.decode().split('"Id":"')[1].split('"')[0]

        def raw_cycle() -> None:
            session.run_ps(framed(["Get-VM -Id $a.id | Start-VM"], {"id": vm_id}))
            session.run_ps(framed(["Get-VM -Id $a.id | Stop-VM -TurnOff -Force"], {"id": vm_id}))

        extra = {"transport": "basic", "poll_interval": "3600"}
        settings = DriverSettings(
            uri=url, username="Administrator", password="Passw0rd!", extra=extra
        )
        driven, raw = asyncio.run(
            _alternate(HyperVDriver(settings), disk, raw_cycle, cycles, block)
        )
    return {"hyperv_power_cycle_p50_ms": driven, "hyperv_raw_power_cycle_p50_ms": raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--block", type=int, default=10)
    args = parser.parse_args()
    configure_logging(level="warning")
    result: dict[str, float | str] = {
        **_xen(args.cycles, args.block),
        **_hyperv(args.cycles, args.block),
    }
    for name in ("xenserver", "hyperv"):
        ratio = result[f"{name}_power_cycle_p50_ms"] / result[f"{name}_raw_power_cycle_p50_ms"]
        result[f"{name}_driver_over_raw"] = round(float(ratio), 2)
    result["goal"] = "each <driver>_driver_over_raw <= 1.3"
    emit(result)


if __name__ == "__main__":
    main()
