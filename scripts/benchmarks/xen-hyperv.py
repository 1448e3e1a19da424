"""scripts/bench xen-hyperv: a power cycle through each driver against the bare client library.

Prints ONE JSON object. Against the protocol simulators of ``tests/simulators`` (in this process,
on loopback), one power cycle is start then a hard stop of a defined VM: through the driver
(``start_vm`` + ``stop_vm(timeout=0)``, with the state checks that make them idempotent) and
through the bare client library with the same calls a careful script would make at the least
(XenAPI: ``VM.start_on`` + ``VM.hard_shutdown``; pywinrm: ``Start-VM`` + ``Stop-VM -TurnOff`` in
two ``run_ps``). Figures are medians over --cycles cycles. Goal: each driver <= 1.3 x raw.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))

import winrm  # noqa: E402
import XenAPI  # noqa: E402
from _common import emit  # noqa: E402

from cloudcore.logging import configure_logging  # noqa: E402
from hypervisor_drivers.base import DomainSpec, DriverSettings, FileDisk  # noqa: E402
from hypervisor_drivers.hyperv import HyperVDriver  # noqa: E402
from hypervisor_drivers.hyperv._script import framed  # noqa: E402
from hypervisor_drivers.xenserver import XenServerDriver  # noqa: E402
from tests.simulators.winrm import running_winrm  # noqa: E402
from tests.simulators.xapi import Xapi, running_xapi  # noqa: E402


def _p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


async def _driver_cycles(driver: XenServerDriver | HyperVDriver, disk: str, cycles: int) -> float:
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
        samples = []
        for _ in range(cycles):
            started = time.perf_counter()
            await driver.start_vm(vm)
            await driver.stop_vm(vm, timeout=0)
            samples.append(time.perf_counter() - started)
        await driver.destroy_vm(vm)
    finally:
        await driver.close()
    return _p50_ms(samples)


def _xen(cycles: int) -> dict[str, float]:
    xapi = Xapi()
    with running_xapi(xapi) as server:
        settings = DriverSettings(uri=server.url, username="root", password="secret")
        driven = asyncio.run(_driver_cycles(XenServerDriver(settings), xapi.add_vdi("d"), cycles))
        session = XenAPI.Session(server.url)
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
        samples = []
        for _ in range(cycles):
            started = time.perf_counter()
            x.VM.start_on(vm, host, False, False)
            x.VM.hard_shutdown(vm)
            samples.append(time.perf_counter() - started)
        session.xenapi.session.logout()
    return {
        "xenserver_power_cycle_p50_ms": driven,
        "xenserver_raw_power_cycle_p50_ms": _p50_ms(samples),
    }


def _hyperv(cycles: int) -> dict[str, float]:
    with running_winrm() as server:
        extra = {"transport": "basic", "poll_interval": "3600"}
        settings = DriverSettings(
            uri=server.url, username="Administrator", password="Passw0rd!", extra=extra
        )
        driven = asyncio.run(_driver_cycles(HyperVDriver(settings), "C:\\VMs\\d.vhdx", cycles))
        session = winrm.Session(
            server.url,
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
        samples = []
        for _ in range(cycles):
            started = time.perf_counter()
            session.run_ps(framed(["Get-VM -Id $a.id | Start-VM"], {"id": vm_id}))
            session.run_ps(framed(["Get-VM -Id $a.id | Stop-VM -TurnOff -Force"], {"id": vm_id}))
            samples.append(time.perf_counter() - started)
    return {"hyperv_power_cycle_p50_ms": driven, "hyperv_raw_power_cycle_p50_ms": _p50_ms(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    configure_logging(level="warning")
    result: dict[str, float | str] = {**_xen(args.cycles), **_hyperv(args.cycles)}
    for name in ("xenserver", "hyperv"):
        ratio = result[f"{name}_power_cycle_p50_ms"] / result[f"{name}_raw_power_cycle_p50_ms"]
        result[f"{name}_driver_over_raw"] = round(float(ratio), 2)
    result["goal"] = "each <driver>_driver_over_raw <= 1.3"
    emit(result)


if __name__ == "__main__":
    main()
