"""``cloudcore db status`` and ``cloudcore db upgrade`` on an embedded store."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudcore.app.cli import main


def test_db_status_says_to_upgrade_until_db_upgrade_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cloudcore.toml"
    config.write_text(f'[store]\nsqlite_path = "{tmp_path / "cc.db"}"\n[log]\nlevel = "error"\n')

    assert main(["--config", str(config), "db", "status"]) == 1
    assert "run `cloudcore db upgrade`" in capsys.readouterr().out
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    assert "applied migrations: 1" in capsys.readouterr().out
    assert main(["--config", str(config), "db", "status"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_db_reconcile_reports_then_fixes_quota_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from cloudcore.store.records import Tenant
    from cloudcore.store.sqlite import SqliteStore

    async def leak() -> None:
        store = await SqliteStore.connect(tmp_path / "cc.db")
        await store.upgrade()
        await store.create(Tenant(id="acme", name="acme"))
        await store.set_quota("acme", "vms", 10)
        await store.consume_quota("acme", {"vms": 4})  # four VMs' worth, none exists
        await store.close()

    asyncio.run(leak())
    config = tmp_path / "cloudcore.toml"
    config.write_text(f'[store]\nsqlite_path = "{tmp_path / "cc.db"}"\n[log]\nlevel = "error"\n')

    assert main(["--config", str(config), "db", "reconcile", "--dry-run"]) == 1
    assert "tenant acme vms: recorded 4, exists 0" in capsys.readouterr().out
    assert main(["--config", str(config), "db", "reconcile"]) == 0
    assert "(set to 0)" in capsys.readouterr().out
    assert main(["--config", str(config), "db", "reconcile", "--dry-run"]) == 0
