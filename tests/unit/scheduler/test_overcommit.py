import math

import pytest

from actors.scheduler import PHYSICAL_CPUS, allocatable
from actors.scheduler.overcommit import physical_cpus
from cloudcore.errors import ConfigError, InvalidRecord
from tests.unit.scheduler.hosts import host


def test_allocatable_multiplies_physical_capacity_by_the_ratios() -> None:
    assert allocatable(8, 16384, 4.0, 1.5) == (32, 24576)


def test_allocatable_rounds_down_but_not_below_an_exact_product() -> None:
    assert allocatable(3, 1001, 1.1, 0.5) == (3, 500)
    # 100 x 0.57 is 56.99999999999999 in floating point: still 57 whole vCPUs.
    assert allocatable(100, 100, 0.57, 0.29) == (57, 29)


def test_a_ratio_below_one_keeps_a_reserve() -> None:
    assert allocatable(16, 65536, 1.0, 0.9) == (16, 58982)


@pytest.mark.parametrize("ratio", [0, -1.0, math.nan, math.inf])
def test_allocatable_refuses_a_ratio_that_is_not_positive_and_finite(ratio: float) -> None:
    with pytest.raises(ConfigError, match="cpu_ratio"):
        allocatable(8, 1024, ratio, 1.0)
    with pytest.raises(ConfigError, match="memory_ratio"):
        allocatable(8, 1024, 1.0, ratio)


def test_allocatable_refuses_negative_physical_amounts() -> None:
    with pytest.raises(InvalidRecord, match="physical_memory_mib"):
        allocatable(8, -1, 1.0, 1.0)


def test_physical_cpus_comes_from_the_host_capabilities() -> None:
    assert physical_cpus(host("h", capabilities={PHYSICAL_CPUS: "8"})) == 8
    assert physical_cpus(host("h")) is None
    assert physical_cpus(host("h", capabilities={PHYSICAL_CPUS: "eight"})) is None
