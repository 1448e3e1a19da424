"""Each filter on its own: what it lets through and what it rejects."""

from typing import Any

import pytest

from actors.scheduler import PHYSICAL_CPUS, HostView, PlacementRequest, filters
from cloudcore.store.records import AdminState, HostHealth
from tests.unit.scheduler.hosts import host, vm


def _passes(
    name: str, request: PlacementRequest, group: dict[str, int] | None = None, **h: Any
) -> bool:
    check = dict(filters.FILTERS)[name]
    return check(HostView(host("h1", **h)), request, group or {})


PLAIN = PlacementRequest.for_vm(vm("v", cpus=4, memory_mib=8192))


def test_datacenter_rejects_hosts_of_other_datacenters() -> None:
    assert _passes("datacenter", PLAIN)
    assert not _passes("datacenter", PLAIN, datacenter_id="dc2")


@pytest.mark.parametrize(
    ("state", "ok"),
    [(AdminState.ENABLED, True), (AdminState.DISABLED, False), (AdminState.MAINTENANCE, False)],
)
def test_admin_state_takes_only_enabled_hosts(state: AdminState, ok: bool) -> None:
    assert _passes("admin_state", PLAIN, admin_state=state) is ok


@pytest.mark.parametrize(
    ("health", "ok"),
    [
        (HostHealth.HEALTHY, True),
        (HostHealth.UNKNOWN, False),
        (HostHealth.DEGRADED, False),
        (HostHealth.UNREACHABLE, False),
    ],
)
def test_health_takes_only_healthy_hosts(health: HostHealth, ok: bool) -> None:
    assert _passes("health", PLAIN, health=health) is ok


def test_capacity_takes_an_exact_fit() -> None:
    assert _passes("capacity", PLAIN, cpus=8, cpus_used=4, memory_mib=16384, memory_mib_used=8192)


def test_capacity_rejects_a_host_short_of_memory_by_one_mib() -> None:
    assert not _passes("capacity", PLAIN, memory_mib=16384, memory_mib_used=8193)


def test_capacity_rejects_a_host_short_of_cpus() -> None:
    assert not _passes("capacity", PLAIN, cpus=8, cpus_used=5)


def test_capacity_counts_overcommitted_cpus_but_no_vm_is_wider_than_the_machine() -> None:
    # 2 physical cores at 4x overcommit: 8 allocatable vCPUs, but one VM gets at most 2.
    physical = {PHYSICAL_CPUS: "2"}
    small = PlacementRequest.for_vm(vm("v", cpus=2, memory_mib=512))
    assert _passes("capacity", small, cpus=8, cpus_used=6, capabilities=physical)
    assert not _passes("capacity", PLAIN, cpus=8, capabilities=physical)
    assert _passes("capacity", PLAIN, cpus=8)  # physical count unknown: allocatable bounds it


def test_anti_affinity_rejects_hosts_that_run_a_vm_of_the_group() -> None:
    request = PlacementRequest.for_vm(vm("v", affinity_group="db"))
    assert not _passes("anti_affinity", request, {"h1": 1})
    assert _passes("anti_affinity", request, {"h2": 1})
    assert _passes("affinity", request, {"h2": 1})  # not an affinity group


def test_affinity_takes_only_hosts_of_the_group_once_it_has_a_vm() -> None:
    request = PlacementRequest.for_vm(vm("v", affinity_group="app", extra={"affinity": "affinity"}))
    assert _passes("affinity", request, {})
    assert _passes("affinity", request, {"h1": 2})
    assert not _passes("affinity", request, {"h2": 1})
    assert _passes("anti_affinity", request, {"h1": 1})  # not an anti-affinity group


def test_request_filters_are_the_filters_the_index_does_not_answer() -> None:
    by_name = dict(filters.FILTERS)
    assert (
        tuple(by_name[n] for n in ("capacity", "affinity", "anti_affinity"))
        == filters.REQUEST_FILTERS
    )
