"""Deploys through the HTTP API onto vcsim ESXi hosts registered through the API (the
``deploys_per_s_vcsim`` figure of scripts/bench vsphere)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from cloudcore.store.sqlite import SqliteStore
from tests import vcsim
from tests.component.gateway.conftest import api_settings, serve_api
from tests.waiting import eventually


async def deploy_through_api(
    sim: vcsim.Vcsim, folder: Path, hosts: int, vms: int, window: int
) -> dict[str, Any]:
    store = await SqliteStore.connect(folder / "bench.db")
    try:
        await store.upgrade()
        async with serve_api(store, api_settings(folder)) as api:
            r = await api.call("POST", "/datacenters", "admin", {"id": "vc", "name": "vcenter"})
            assert r.status == 201, r.body
            ids = [f"esx-{n}" for n in range(hosts)]
            for n, host_id in enumerate(ids):
                body = vcsim.host_registration(
                    sim, f"DC0_C0_H{n}", host_id=host_id, datacenter_id="vc"
                )
                r = await api.call("POST", "/hosts", "operator", body)
                assert r.status == 201, r.body

            async def healthy() -> bool:
                page = await api.call("GET", "/hosts?datacenter_id=vc&health=HEALTHY&limit=100")
                return len(page.body["items"]) == hosts

            await eventually(healthy, timeout=120)
            slots = asyncio.Semaphore(window)
            failed = 0

            async def one(n: int) -> None:
                nonlocal failed
                async with slots:
                    body = {"name": f"vm{n}", "datacenter_id": "vc", "cpus": 1, "memory_mib": 64}
                    r = await api.call("POST", "/vms", "alice", body)
                    if r.status != 202:
                        failed += 1
                        return
                    try:
                        task = await api.orchestrator.wait(r.body["id"], timeout=120)
                    except TimeoutError:  # counted, not fatal: the run still reports
                        failed += 1
                        return
                    failed += task.error is not None

            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(vms)))
            elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return {
        "deploys_per_s_vcsim": round(vms / elapsed, 1),
        "deploy_hosts": hosts,
        "deploy_vms": vms,
        "failed_deploys": failed,
    }
