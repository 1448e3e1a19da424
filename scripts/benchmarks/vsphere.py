"""scripts/bench vsphere: the vSphere driver against bare pyvmomi, and deploys through the API,
on VMware's vCenter simulator (vcsim, built by ``ensure_vcsim``; ``$VCSIM_BIN`` or the cache).

Prints ONE JSON object. Figures:

- ``driver_power_cycle_p50_ms``: one power cycle of a defined VM through the driver,
  ``start_vm`` then ``stop_vm(timeout=0)`` (a hard stop), with everything that makes them
  idempotent and safe (the VM looked up on its host, a suspended VM refused); median over
  --cycles cycles.
- ``raw_pyvmomi_power_cycle_p50_ms``: the same cycle through pyvmomi alone, as a careful script
  would make it at the least: the VM found once, then ``PowerOnVM_Task`` + ``WaitForTask`` and
  ``PowerOffVM_Task`` + ``WaitForTask``. Same vcsim, same run, alternating with the driver's
  cycles so that neither gets a quieter machine.
- ``deploys_per_s_vcsim``: --vms VMs deployed through the HTTP API (POST /api/v1/vms, a window
  of --window in flight) onto --hosts vcsim ESXi hosts that were registered through the API
  (POST /api/v1/hosts, hypervisor ``vsphere``); each deploy is the product's whole path (task,
  placement claim, CreateVM_Task, PowerOnVM_Task, every state persisted on SQLite), counted
  when its task has succeeded.

Goals: ``driver_power_cycle_p50_ms <= 1.2 x raw``; ``deploys_per_s_vcsim >= 50``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))

from _common import emit  # noqa: E402
from pyVim.task import WaitForTask  # noqa: E402

from cloudcore.logging import configure_logging  # noqa: E402
from hypervisor_drivers.base import DomainSpec  # noqa: E402
from hypervisor_drivers.registry import create_driver  # noqa: E402
from tests import vcsim  # noqa: E402

GOAL_RATIO = 1.2
GOAL_DEPLOYS_PER_S = 50.0


def _p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def _raw_vm(sim: vcsim.Vcsim, vm_uuid: str) -> tuple[Any, Any]:
    """A pyvmomi session of its own and the VM, found once."""
    from urllib.parse import urlsplit

    from pyVim.connect import SmartConnect

    url = urlsplit(sim.uri)
    si = SmartConnect(
        host=url.hostname,
        port=url.port,
        user=sim.username,
        pwd=sim.password,
        disableSslCertValidation=True,
    )
    vm = si.content.searchIndex.FindByUuid(None, vm_uuid, vmSearch=True, instanceUuid=True)
    return si, vm


def _raw_cycle(vm: Any) -> float:
    started = time.perf_counter()
    WaitForTask(vm.PowerOnVM_Task())
    WaitForTask(vm.PowerOffVM_Task())
    return time.perf_counter() - started


async def power_cycles(sim: vcsim.Vcsim, cycles: int) -> dict[str, float]:
    from pyVim.connect import Disconnect

    driver = create_driver("vsphere", sim.settings("DC0_C0_H0"))
    await driver.connect()
    ours = DomainSpec(uuid=str(uuid.uuid4()), name="bench-driver", vcpus=1, memory_mib=64)
    theirs = DomainSpec(uuid=str(uuid.uuid4()), name="bench-raw", vcpus=1, memory_mib=64)
    await driver.define_vm(ours)
    await driver.define_vm(theirs)  # made alike; then driven by pyvmomi alone
    si, raw_vm = await asyncio.to_thread(_raw_vm, sim, theirs.uuid)
    driven: list[float] = []
    raw: list[float] = []
    try:
        for _ in range(cycles):
            started = time.perf_counter()
            await driver.start_vm(ours.uuid)
            await driver.stop_vm(ours.uuid, timeout=0)
            driven.append(time.perf_counter() - started)
            raw.append(await asyncio.to_thread(_raw_cycle, raw_vm))
    finally:
        await asyncio.to_thread(Disconnect, si)
        await driver.destroy_vm(ours.uuid)
        await driver.destroy_vm(theirs.uuid)
        await driver.close()
    return {
        "driver_power_cycle_p50_ms": _p50_ms(driven),
        "raw_pyvmomi_power_cycle_p50_ms": _p50_ms(raw),
    }


async def deploys(sim: vcsim.Vcsim, hosts: int, vms: int, window: int) -> dict[str, float]:
    from _vsphere_deploys import deploy_through_api

    with tempfile.TemporaryDirectory() as folder:
        return await deploy_through_api(sim, Path(folder), hosts, vms, window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--vms", type=int, default=150, help="at most 4 per host (2 CPUs, x4)")
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()
    configure_logging(level=os.environ.get("BENCH_LOG", "error"))
    result: dict[str, Any] = {"suite": "vsphere"}
    with vcsim.running_vcsim("-cluster-host", "1", "-host", "0", "-ds", "1") as sim:
        result.update(asyncio.run(power_cycles(sim, args.cycles)))
    with vcsim.running_vcsim("-cluster-host", str(args.hosts), "-host", "0", "-ds", "1") as sim:
        result.update(asyncio.run(deploys(sim, args.hosts, args.vms, args.window)))
    ratio = result["driver_power_cycle_p50_ms"] / result["raw_pyvmomi_power_cycle_p50_ms"]
    result["driver_over_raw"] = round(ratio, 2)
    result["goals"] = {
        f"driver_power_cycle_p50_ms <= {GOAL_RATIO} x raw": ratio <= GOAL_RATIO,
        f"deploys_per_s_vcsim >= {GOAL_DEPLOYS_PER_S:g}": (
            result["deploys_per_s_vcsim"] >= GOAL_DEPLOYS_PER_S
        ),
    }
    emit(result)


if __name__ == "__main__":
    main()
