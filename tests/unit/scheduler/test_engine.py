"""The engine: weighers, groups, the no-fit explanation, and its view kept right."""

import pytest

from actors.scheduler import PlacementRequest, SchedulerEngine, Weigher
from cloudcore.errors import NoValidHost
from cloudcore.store.records import AdminState, HostHealth, HostPower
from tests.unit.scheduler.hosts import DC, host, vm


def _engine(
    *free_mib: int, weigher: Weigher = Weigher.PACK, candidates: int = 3
) -> SchedulerEngine:
    """Hosts h0, h1, ... of 32 GiB with ``free_mib`` free each."""
    engine = SchedulerEngine(DC, weigher=weigher, candidates=candidates)
    for i, free in enumerate(free_mib):
        engine.upsert_host(host(f"h{i}", memory_mib_used=32768 - free))
    return engine


def _request(cpus: int = 2, memory_mib: int = 4096, **spec: object) -> PlacementRequest:
    return PlacementRequest.for_vm(vm("v", cpus, memory_mib, **spec))


def test_pack_offers_the_least_free_memory_that_fits_first() -> None:
    engine = _engine(2048, 30000, 4096, 8192, 20000)
    assert engine.select(_request(memory_mib=4096)) == ["h2", "h3", "h4"]


def test_spread_offers_the_most_free_memory_first() -> None:
    engine = _engine(2048, 30000, 4096, 8192, 20000, weigher=Weigher.SPREAD)
    assert engine.select(_request(memory_mib=4096)) == ["h1", "h4", "h3"]


def test_equal_hosts_are_ordered_by_id_so_the_order_is_total() -> None:
    assert _engine(8192, 8192, 8192).select(_request()) == ["h0", "h1", "h2"]
    spread = _engine(8192, 8192, 8192, weigher=Weigher.SPREAD)
    assert spread.select(_request()) == ["h2", "h1", "h0"]


def test_select_offers_at_most_candidates_hosts() -> None:
    assert len(_engine(*[32768] * 10, candidates=2).select(_request())) == 2


def test_hosts_short_of_cpus_are_skipped_on_the_walk() -> None:
    engine = _engine(8192, 8192)
    engine.upsert_host(host("h0", memory_mib_used=32768 - 8192, cpus_used=15))
    assert engine.select(_request(cpus=2)) == ["h1"]


def test_disabled_unhealthy_and_foreign_hosts_are_never_offered() -> None:
    engine = _engine()
    engine.upsert_host(host("off", admin_state=AdminState.DISABLED))
    engine.upsert_host(host("sick", health=HostHealth.DEGRADED))
    engine.upsert_host(host("far", datacenter_id="dc2"))
    engine.upsert_host(host("ok"))
    assert engine.select(_request()) == ["ok"]


def test_a_claim_moves_the_host_in_the_order() -> None:
    engine = _engine(16384, 8192)
    assert engine.select(_request(memory_mib=4096))[0] == "h1"
    engine.claimed("h1", 2, 6144, "vm-a", None)  # h1 now has 2048 MiB free: too little
    assert engine.select(_request(memory_mib=4096)) == ["h0"]
    engine.released("vm-a")
    assert engine.select(_request(memory_mib=4096)) == ["h1", "h0"]


def test_anti_affinity_puts_each_vm_of_the_group_on_another_host() -> None:
    engine = _engine(32768, 32768, 32768, candidates=1)
    chosen = []
    for i in range(3):
        request = PlacementRequest.for_vm(vm(f"db{i}", affinity_group="db"))
        [host_id] = engine.select(request)
        engine.claimed(host_id, 2, 4096, f"db{i}", request.group)
        chosen.append(host_id)
    assert sorted(chosen) == ["h0", "h1", "h2"]
    with pytest.raises(NoValidHost) as failure:
        engine.select(PlacementRequest.for_vm(vm("db3", affinity_group="db")))
    assert failure.value.explanation["anti_affinity"] == 3
    # Another tenant's group of the same name is not held back.
    other = PlacementRequest.for_vm(vm("x", affinity_group="db", tenant_id="t2"))
    assert engine.select(other) == ["h0"]


def test_anti_affinity_frees_a_host_when_the_groups_vm_leaves_it() -> None:
    engine = _engine(32768)
    request = _request(affinity_group="db")
    engine.claimed("h0", 2, 4096, "db0", request.group)
    with pytest.raises(NoValidHost):
        engine.select(request)
    engine.released("db0")
    assert engine.select(request) == ["h0"]


def test_affinity_follows_the_groups_first_vm() -> None:
    engine = _engine(32768, 16384, 8192)
    request = _request(affinity_group="app", extra={"affinity": "affinity"})
    assert engine.select(request)[0] == "h2"  # first VM: wherever pack puts it
    engine.claimed("h1", 2, 4096, "app0", request.group)
    assert engine.select(request) == ["h1"]


def test_affinity_fails_when_the_groups_host_is_full_rather_than_splitting() -> None:
    engine = _engine(32768, 4096)
    request = _request(memory_mib=4096, affinity_group="app", extra={"affinity": "affinity"})
    engine.claimed("h1", 2, 4096, "app0", request.group)
    with pytest.raises(NoValidHost) as failure:
        engine.select(request)
    assert failure.value.explanation["capacity"] == 1
    assert failure.value.explanation["affinity"] == 1


def test_no_fit_counts_each_host_under_the_first_filter_that_rejected_it() -> None:
    engine = _engine(*[2048] * 7)  # capacity: 7 hosts short of memory
    engine.upsert_host(host("sick1", health=HostHealth.UNREACHABLE))
    engine.upsert_host(host("sick2", health=HostHealth.UNKNOWN, admin_state=AdminState.DISABLED))
    engine.upsert_host(host("maint", admin_state=AdminState.MAINTENANCE))
    engine.upsert_host(host("far", datacenter_id="dc2", memory_mib_used=32768))
    engine.upsert_host(host("taken"))
    request = PlacementRequest.for_vm(vm("v", 4, 8192, affinity_group="web"))
    engine.claimed("taken", 1, 1024, "web0", request.group)
    with pytest.raises(NoValidHost) as failure:
        engine.select(request)
    assert failure.value.explanation == {
        "datacenter": 1,
        "admin_state": 2,
        "health": 1,
        "power": 0,
        "capacity": 7,
        "affinity": 0,
        "anti_affinity": 1,
    }
    assert str(failure.value) == (
        "no host fits 4 CPUs/8192 MiB in dc1 (anti-affinity group t1/web): datacenter rejected 1, "
        "admin_state rejected 2, health rejected 1, capacity rejected 7, anti_affinity rejected 1"
    )


def test_no_fit_in_an_empty_datacenter_says_no_hosts_are_known() -> None:
    with pytest.raises(NoValidHost, match="no host fits 2 CPUs/4096 MiB in dc1: no hosts known"):
        _engine().select(_request())


def test_a_request_for_another_datacenter_is_rejected_by_the_datacenter_filter() -> None:
    request = PlacementRequest.for_vm(vm("v", datacenter_id="dc2"))
    with pytest.raises(NoValidHost) as failure:
        _engine(32768, 32768).select(request)
    assert failure.value.explanation["datacenter"] == 2


def test_explain_counts_the_hosts_that_pass() -> None:
    explanation = _engine(32768, 2048, 32768).explain(_request())
    assert explanation.passed == 2
    assert explanation.rejected["capacity"] == 1


def test_an_older_host_record_does_not_undo_a_newer_one() -> None:
    engine = _engine()
    engine.upsert_host(host("h", version=3, health=HostHealth.DEGRADED))
    engine.upsert_host(host("h", version=2))
    with pytest.raises(NoValidHost):
        engine.select(_request())
    engine.upsert_host(host("h", version=3))  # same version: claims change without a new version
    assert engine.select(_request()) == ["h"]


def test_a_removed_host_is_not_offered_and_a_refresh_replaces_claimed_amounts() -> None:
    engine = _engine(32768, 32768)
    engine.remove_host("h0")
    engine.remove_host("nope")
    assert engine.select(_request()) == ["h1"]
    engine.upsert_host(host("h1", memory_mib_used=32768))
    with pytest.raises(NoValidHost):
        engine.select(_request())


def test_claimed_twice_for_one_vm_counts_once_and_moves_it() -> None:
    engine = _engine(32768, 32768)
    engine.claimed("h0", 4, 8192, "a", "t1/g")
    engine.claimed("h1", 4, 8192, "a", "t1/g")
    h0, h1 = engine.host("h0"), engine.host("h1")
    assert h0 is not None and h1 is not None
    assert (h0.cpus_used, h0.memory_mib_used) == (0, 0)
    assert (h1.cpus_used, h1.memory_mib_used) == (4, 8192)
    assert engine.group_hosts("t1/g") == {"h1": 1}


def test_release_of_a_vm_the_engine_does_not_know_uses_the_message_and_never_goes_negative() -> (
    None
):
    engine = SchedulerEngine(DC)
    engine.upsert_host(host("h0", cpus_used=4, memory_mib_used=8192))
    engine.released("other", "h0", 2, 4096, None)
    engine.released("other", "h0", 2, 4096, None)
    engine.released("other", "h0", 2, 4096, None)
    h0 = engine.host("h0")
    assert h0 is not None and (h0.cpus_used, h0.memory_mib_used) == (0, 0)


def test_adopt_records_the_group_without_counting_the_claim_again() -> None:
    engine = SchedulerEngine(DC)
    engine.upsert_host(host("h0", cpus_used=2, memory_mib_used=4096))
    engine.adopt("db0", "h0", 2, 4096, "t1/db")
    h0 = engine.host("h0")
    assert h0 is not None and h0.memory_mib_used == 4096
    assert engine.group_hosts("t1/db") == {"h0": 1}
    engine.released("db0")
    assert h0.memory_mib_used == 0
    assert engine.group_hosts("t1/db") == {}


def test_a_standby_host_is_never_offered_but_named_to_wake_when_nothing_else_fits() -> None:
    engine = SchedulerEngine(DC)
    engine.upsert_host(host("on", memory_mib=8192))
    engine.upsert_host(host("asleep", power_state=HostPower.STANDBY))
    engine.upsert_host(host("waking", power_state=HostPower.WAKING, memory_mib=4096))
    assert engine.select(_request(memory_mib=4096)) == ["on"]
    with pytest.raises(NoValidHost) as failure:
        engine.select(_request(memory_mib=16384))
    assert failure.value.explanation["power"] == 2
    assert engine.standby_for(_request(memory_mib=16384)) == "asleep"  # the one it fits
    assert engine.standby_for(_request(memory_mib=4096)) == "waking"  # pack: least free first
    assert engine.standby_for(_request(memory_mib=65536)) is None
