"""The tgt driver's pool files and tool deadlines, without tgtd."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from cloudcore.errors import AlreadyExists, BackendUnavailable, ConfigError
from storage_drivers.base import StorageSettings
from storage_drivers.tgt import TgtDriver
from storage_drivers.tgt._client import Tgtadm, run_tool
from storage_drivers.tgt._pool import MIB, ExportRecord, Pool


async def test_a_tool_past_its_deadline_is_killed_and_reported_unavailable() -> None:
    script = "import time; time.sleep(30)"
    with pytest.raises(BackendUnavailable, match=r"sleepy took longer than 0.2 s"):
        await run_tool([sys.executable, "-c", script], 0.2, "sleepy")


async def test_a_missing_tgtadm_or_tgtd_is_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="not installed"):
        await Tgtadm(None, 5, binary=str(tmp_path / "no-tgtadm")).targets()
    driver = TgtDriver(StorageSettings(pool=str(tmp_path / "pool"), extra={"tgtadm": "/bin/false"}))
    with pytest.raises(BackendUnavailable):
        await driver.connect()
    with pytest.raises(BackendUnavailable, match="not connected"):
        await driver.list_volumes()


async def test_volumes_are_sparse_and_made_whole_or_not_at_all(tmp_path: Path) -> None:
    pool = Pool(tmp_path)
    pool.prepare()
    (tmp_path / "tmp" / "half.img").write_bytes(b"x")  # an interrupted create
    pool.prepare()
    assert list((tmp_path / "tmp").iterdir()) == []
    await pool.create(pool.volume_path("v1"), 1024)
    info = pool.volume_info("v1")
    assert (info.size_mib, info.allocated_mib) == (1024, 0)
    assert pool.volume_ids() == ["v1"]
    with pytest.raises(AlreadyExists):  # never over an existing volume
        await pool.copy(pool.volume_path("v1"), pool.volume_path("v1"), 1024, 10)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_export_records_are_readable_by_this_user_only(tmp_path: Path) -> None:
    pool = Pool(tmp_path)
    pool.prepare()
    record = ExportRecord(initiator="iqn.x:h", chap_username="cc-v1", chap_secret="topsecret42")
    pool.write_export("v1", record)
    assert pool.read_export("v1") == record and "topsecret42" not in repr(record)
    path = tmp_path / "exports" / "v1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "exports").stat().st_mode) == 0o700
    assert pool.exported_ids() == ["v1"]
    pool.remove_export("v1")
    assert pool.read_export("v1") is None and pool.exported_ids() == []
    assert MIB == 1 << 20


def test_malformed_settings_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tgt storage driver settings"):
        TgtDriver(StorageSettings(pool="/p", extra={"control_port": "seventy"}))
