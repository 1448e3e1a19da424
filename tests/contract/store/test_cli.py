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
