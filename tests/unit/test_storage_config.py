"""``[storage]``: pools read from the file or the environment; a bad pool fails at start,
named; the demo's simulated pool only when none is configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.storage import demo_pool, initiator_name
from cloudcore.config import StorageConfig, load_settings
from cloudcore.errors import ConfigError
from cloudcore.store.records import Host

POOL = """
[[storage.pools]]
id = "fast-1"
datacenter = "dc1"
driver = "tgt"
tier = "ssd"
overcommit = 2.5
extra = { control_port = "3261" }
"""


def test_pools_are_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(POOL)
    (pool,) = load_settings(path, environ={}).storage.pools
    assert (pool.id, pool.driver, pool.tier, pool.overcommit) == ("fast-1", "tgt", "ssd", 2.5)
    assert pool.extra == {"control_port": "3261"}
    assert demo_pool(load_settings(path, environ={}).storage, "dc1") is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (POOL.replace('id = "fast-1"', 'id = "Fast_1"'), "storage pool id"),
        (POOL.replace("overcommit = 2.5", "overcommit = 0.5"), "overcommit"),
        (POOL.replace('tier = "ssd"', 'tyre = "ssd"'), "tyre"),
        (POOL.replace('datacenter = "dc1"\n', ""), "datacenter"),
    ],
)
def test_a_bad_pool_fails_naming_what(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named):
        load_settings(path, environ={})


def test_the_demo_pool_and_initiator_names() -> None:
    config = StorageConfig()
    pool = demo_pool(config, "dc1")
    assert pool is not None and (pool.id, pool.driver) == ("dc1-pool", "simulated")
    assert demo_pool(StorageConfig(demo_pool_gib=0), "dc1") is None
    host = Host(id="h1", datacenter_id="dc1", name="h1", hypervisor="libvirt", cpus=1,
                memory_mib=64)  # fmt: skip
    assert initiator_name(config, host) == "iqn.2026-12.org.cloudcore.host:h1"
    named = Host(**{**{f: getattr(host, f) for f in host.__struct_fields__},
                    "capabilities": {"iscsi.initiator": "iqn.2001-04.com.example:h1"}})  # fmt: skip
    assert initiator_name(config, named) == "iqn.2001-04.com.example:h1"
