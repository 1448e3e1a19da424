"""``cloudcore token create`` against a SQLite store in a temporary data directory: it makes the
tenant and the user when missing, prints the secret alone on stdout, and keeps only its hash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudcore.app.cli import main
from cloudcore.app.gateway.auth import hash_token
from cloudcore.store.records import ApiToken, Role, Tenant, User
from cloudcore.store.sqlite import SqliteStore


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDCORE_NODE__DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLOUDCORE_STORE__BACKEND", "sqlite")
    monkeypatch.setenv("CLOUDCORE_STORE__AUTO_UPGRADE", "true")
    return tmp_path


def stored(data_dir: Path) -> tuple[list[Tenant], list[User], list[ApiToken]]:
    async def read() -> tuple[list[Tenant], list[User], list[ApiToken]]:
        store = await SqliteStore.connect(data_dir / "cloudcore.db")
        try:
            return (
                (await store.list(Tenant)).items,
                (await store.list(User)).items,
                (await store.list(ApiToken)).items,
            )
        finally:
            await store.close()

    return asyncio.run(read())


def create(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["token", "create", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_it_creates_the_tenant_and_user_and_prints_the_secret_alone(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = create(
        capsys, "--tenant", "acme", "--user", "alice", "--role", "operator", "--name", "ci"
    )
    assert code == 0, err
    secret = out.strip()
    assert out == secret + "\n" and secret.startswith("cc_")
    assert "created tenant acme" in err and "created user alice (operator)" in err
    assert secret not in err
    tenants, users, tokens = stored(data_dir)
    assert [t.id for t in tenants] == ["acme"]
    assert [(u.tenant_id, u.name, u.role) for u in users] == [("acme", "alice", Role.OPERATOR)]
    assert [(t.user_id, t.name, t.token_hash) for t in tokens] == [
        (users[0].id, "ci", hash_token(secret))
    ]
    assert secret not in (data_dir / "cloudcore.db").read_bytes().decode(errors="replace")


def test_a_second_token_reuses_the_tenant_and_the_user(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = create(capsys, "--tenant", "acme", "--user", "alice")
    second = create(capsys, "--tenant", "acme", "--user", "alice", "--role", "user")
    assert first[0] == second[0] == 0
    assert first[1] != second[1]
    assert "created" not in second[2]
    tenants, users, tokens = stored(data_dir)
    assert len(tenants) == 1 and [u.role for u in users] == [Role.USER]
    assert {t.token_hash for t in tokens} == {
        hash_token(first[1].strip()),
        hash_token(second[1].strip()),
    }


def test_a_role_that_contradicts_an_existing_user_is_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert create(capsys, "--tenant", "acme", "--user", "alice")[0] == 0
    code, out, err = create(capsys, "--tenant", "acme", "--user", "alice", "--role", "admin")
    assert code == 2 and out == ""
    assert "has the role user, not admin" in err
    assert len(stored(data_dir)[2]) == 1


def test_a_store_whose_schema_is_missing_is_reported_not_changed(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDCORE_STORE__AUTO_UPGRADE", "false")
    code, out, err = create(capsys, "--tenant", "acme", "--user", "alice")
    assert code == 2 and out == ""
    assert "cloudcore db upgrade" in err


def test_tenant_and_user_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", "create", "--tenant", "acme"])
    assert exited.value.code == 2
    assert "--user" in capsys.readouterr().err
