import pytest

from actors.scheduler import PlacementRequest, Policy
from cloudcore.errors import InvalidRecord
from tests.unit.scheduler.hosts import vm


def test_a_vm_without_a_group_has_no_policy() -> None:
    request = PlacementRequest.for_vm(vm("a"))
    assert (request.group, request.policy) == (None, None)


def test_a_group_without_a_policy_is_anti_affinity() -> None:
    request = PlacementRequest.for_vm(vm("a", affinity_group="db"))
    assert (request.group, request.policy) == ("t1/db", Policy.ANTI_AFFINITY)


def test_the_policy_comes_from_spec_extra() -> None:
    request = PlacementRequest.for_vm(vm("a", affinity_group="app", extra={"affinity": "affinity"}))
    assert request.policy is Policy.AFFINITY


def test_an_unknown_policy_is_refused_naming_the_group() -> None:
    with pytest.raises(InvalidRecord, match=r"'web'.*'sideways'"):
        PlacementRequest.for_vm(vm("a", affinity_group="web", extra={"affinity": "sideways"}))


def test_groups_of_the_same_name_in_two_tenants_are_different_groups() -> None:
    mine = PlacementRequest.for_vm(vm("a", affinity_group="web"))
    theirs = PlacementRequest.for_vm(vm("b", affinity_group="web", tenant_id="t2"))
    assert mine.group != theirs.group
