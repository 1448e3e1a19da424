"""An ask's exception crosses the wire and comes back as the same type where it can."""

from __future__ import annotations

from cloudcore.cluster._failures import failure_of, rebuild
from cloudcore.errors import MailboxFull, NotFound, RemoteError


class OwnError(Exception):
    pass


def test_cloudcore_and_builtin_errors_keep_their_type() -> None:
    for error in (NotFound("no vm 7"), ValueError("bad"), RuntimeError("r")):
        again = rebuild(failure_of(error))
        assert type(again) is type(error)
        assert str(again) == str(error)


def test_other_errors_become_remote_errors_that_name_the_original() -> None:
    again = rebuild(failure_of(OwnError("mine")))
    assert isinstance(again, RemoteError)
    assert again.remote_type.endswith("OwnError")
    assert "mine" in str(again)


def test_retryable_survives() -> None:
    assert rebuild(failure_of(MailboxFull("full"))).retryable  # type: ignore[attr-defined]
