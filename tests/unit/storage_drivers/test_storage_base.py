"""The storage driver ABC, its values and the plugin registry."""

from __future__ import annotations

import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import msgspec
import pytest

from cloudcore.errors import ConfigError, InvalidRequest, UnsupportedOperation
from storage_drivers.base import (
    Capability,
    Capacity,
    Connection,
    StorageDriver,
    StorageSettings,
    VolumeSpec,
    check_id,
)
from storage_drivers.registry import ENTRY_POINT_GROUP, create_driver, load_driver
from storage_drivers.simulated import SimulatedStorageDriver
from storage_drivers.tgt import TgtDriver

ROOT = Path(__file__).resolve().parents[3]


def test_a_driver_missing_a_method_fails_at_instantiation() -> None:
    class Incomplete(StorageDriver):
        async def connect(self) -> None:
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(StorageSettings(pool="/p"))  # type: ignore[abstract]


def test_the_connection_never_shows_its_chap_secret() -> None:
    conn = Connection(
        portal_host="10.0.0.5", portal_port=3260, target_iqn="iqn.x:v1", lun=1,
        initiator="iqn.y:h1", chap_username="cc-v1", chap_secret="s3cr3t-value",
    )  # fmt: skip
    assert "s3cr3t" not in repr(conn) and "s3cr3t" not in str(conn) and "'***'" in repr(conn)
    assert conn.portal == "10.0.0.5:3260"
    assert msgspec.json.decode(msgspec.json.encode(conn), type=Connection) == conn


@pytest.mark.parametrize("bad", ["", "-x", "A", "a_b", "a.b", "a/b", "x" * 64, "../etc"])
def test_ids_that_cannot_name_a_file_and_a_target_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="id"):
        check_id("volume", bad)


def test_a_uuid_is_a_valid_id_and_sizes_must_be_positive() -> None:
    assert check_id("volume", "0b9e2c2e-6d0c-4b8e-9d2a-1f0c7c1e5a11")
    with pytest.raises(InvalidRequest, match="size_mib"):
        VolumeSpec(volume_id="v1", size_mib=0)
    with pytest.raises(InvalidRequest, match="volume id"):
        VolumeSpec(volume_id="V 1", size_mib=1)


def test_capacity_says_what_is_free() -> None:
    assert Capacity(total_mib=100, used_mib=30, provisioned_mib=500).free_mib == 70


class _NoCopies(TgtDriver):
    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.EXTEND})


async def test_a_capability_the_driver_lacks_is_refused_before_the_backend() -> None:
    driver = _NoCopies(StorageSettings(pool="/nonexistent"))  # never connected
    assert driver.supports(Capability.EXTEND) and not driver.supports(Capability.CLONE)
    with pytest.raises(UnsupportedOperation, match="does not support snapshot"):
        await driver.create_snapshot("v1", "s1")
    with pytest.raises(UnsupportedOperation, match="does not support clone"):
        await driver.clone_volume("v1", VolumeSpec(volume_id="v2", size_mib=1))


def test_pyproject_registers_the_storage_drivers_under_their_group() -> None:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())
    group = table["project"]["entry-points"][ENTRY_POINT_GROUP]
    loaded = {n: EntryPoint(n, value, ENTRY_POINT_GROUP).load() for n, value in group.items()}
    assert loaded == {"tgt": TgtDriver, "simulated": SimulatedStorageDriver}
    assert all(cls.name == name for name, cls in loaded.items())


def _install_plugin(root: Path, entries: str) -> None:
    dist = root / "cc_storage_plugin-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cc-storage-plugin\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entries}\n")


def test_drivers_are_loaded_by_entry_point_name_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(
        tmp_path,
        "tgt2 = storage_drivers.tgt.driver:TgtDriver\nbogus = json:JSONDecoder\n"
        "broken = cc_no_such_module:Driver",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_driver("tgt2") is TgtDriver
    assert isinstance(create_driver("tgt2", StorageSettings(pool="/p")), TgtDriver)
    with pytest.raises(ConfigError, match="not a StorageDriver subclass"):
        load_driver("bogus")
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_driver("broken")
    with pytest.raises(ConfigError, match=r"unknown storage driver 'nope'.*tgt2"):
        load_driver("nope")
