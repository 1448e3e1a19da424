"""The engine's indexed walk against a plain reference scan, over a long random history."""

import random

import pytest

from actors.scheduler import SchedulerEngine, Weigher
from actors.scheduler.request import PlacementRequest
from cloudcore.errors import NoValidHost
from cloudcore.store.records import AdminState, HostHealth
from tests.unit.scheduler.hosts import DC, host, vm


class _Reference:
    """The decision written the slow, obvious way, to compare the engine with."""

    def __init__(self, weigher: Weigher) -> None:
        self.weigher = weigher
        self.hosts: dict[str, dict[str, object]] = {}
        self.vms: dict[str, tuple[str, int, int, str | None]] = {}

    def fits(self, h: dict, r: PlacementRequest) -> bool:
        group = [v for v in self.vms.values() if r.group and v[3] == r.group]
        on = {v[0] for v in group}
        if h["dc"] != DC or h["admin"] != AdminState.ENABLED or h["health"] != HostHealth.HEALTHY:
            return False
        if h["cpus"] - h["cpus_used"] < r.cpus or h["mem"] - h["mem_used"] < r.memory_mib:
            return False
        if r.policy == "anti-affinity" and h["id"] in on:
            return False
        return not (r.policy == "affinity" and on and h["id"] not in on)

    def select(self, r: PlacementRequest, k: int) -> list[str]:
        ok = [h for h in self.hosts.values() if self.fits(h, r)]
        ok.sort(
            key=lambda h: (h["mem"] - h["mem_used"], h["id"]),
            reverse=self.weigher is Weigher.SPREAD,
        )
        return [h["id"] for h in ok[:k]]


@pytest.mark.parametrize("weigher", list(Weigher))
def test_the_indexed_walk_offers_what_a_full_scan_would_after_any_history(weigher: Weigher) -> None:
    rng = random.Random(5)
    engine = SchedulerEngine(DC, weigher=weigher, candidates=4)
    ref = _Reference(weigher)
    placed: list[str] = []
    mismatches = 0
    for step in range(3000):
        roll = rng.random()
        if roll < 0.1:  # a host registers or changes
            hid = f"h{rng.randrange(60)}"
            used_mem = sum(v[2] for v in ref.vms.values() if v[0] == hid)
            used_cpu = sum(v[1] for v in ref.vms.values() if v[0] == hid)
            rec = host(
                hid,
                datacenter_id=DC if rng.random() < 0.95 else "dc2",
                cpus=rng.choice([16, 32, 64]),
                memory_mib=rng.choice([32768, 65536]),
                cpus_used=used_cpu,
                memory_mib_used=used_mem,
                admin_state=rng.choice([AdminState.ENABLED] * 8 + [AdminState.DISABLED]),
                health=rng.choice([HostHealth.HEALTHY] * 8 + [HostHealth.DEGRADED]),
            )
            engine.upsert_host(rec)
            ref.hosts[hid] = {
                "id": hid,
                "dc": rec.datacenter_id,
                "admin": rec.admin_state,
                "health": rec.health,
                "cpus": rec.cpus,
                "mem": rec.memory_mib,
                "cpus_used": used_cpu,
                "mem_used": used_mem,
            }
        elif roll < 0.12 and ref.hosts:  # a host goes away
            hid = rng.choice(sorted(ref.hosts))
            engine.remove_host(hid)
            del ref.hosts[hid]
        elif roll < 0.4 and placed:  # a VM leaves
            vid = placed.pop(rng.randrange(len(placed)))
            hid, cpus, mem, _ = ref.vms.pop(vid)
            engine.released(vid)
            if hid in ref.hosts:
                ref.hosts[hid]["cpus_used"] -= cpus
                ref.hosts[hid]["mem_used"] -= mem
        else:  # a VM is placed
            group = rng.choice([None, None, "db", "app"])
            extra = {"affinity": "affinity"} if group == "app" else {}
            request = PlacementRequest.for_vm(
                vm(
                    f"v{step}",
                    rng.choice([1, 2, 4, 8]),
                    rng.choice([1024, 2048, 4096, 16384]),
                    affinity_group=group,
                    extra=extra,
                )
            )
            expected = ref.select(request, 4)
            try:
                got = engine.select(request)
            except NoValidHost:
                got = []
            mismatches += got != expected
            if got:
                hid = got[0]
                engine.claimed(hid, request.cpus, request.memory_mib, f"v{step}", request.group)
                ref.vms[f"v{step}"] = (hid, request.cpus, request.memory_mib, request.group)
                ref.hosts[hid]["cpus_used"] += request.cpus
                ref.hosts[hid]["mem_used"] += request.memory_mib
                placed.append(f"v{step}")
    assert mismatches == 0
    assert len(placed) > 200  # the history really placed VMs, not only refusals
