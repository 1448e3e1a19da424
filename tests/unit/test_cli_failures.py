"""``cloudcore`` never shows a Python trace: a closed pipe ends quietly, anything else is one
line. (A real ``| head`` cannot be relied on to break the pipe in this sandbox, whose pipes
swallow some writes after the reader closes, so the failure is raised where a write raises it.)"""

from __future__ import annotations

import os

import pytest

from cloudcore.app import cli


def _raising(exc: BaseException) -> object:
    def db_command(*args: object, **kwargs: object) -> int:
        raise exc

    return db_command


def test_a_closed_pipe_ends_quietly_with_the_sigpipe_status(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("cloudcore.store.admin.db_command", _raising(BrokenPipeError()))
    saved = os.dup(1)
    try:
        assert cli.main(["db", "status"]) == 141
    finally:
        os.dup2(saved, 1)  # main pointed stdout at /dev/null, as it must for the final flush
        os.close(saved)
    assert capfd.readouterr().err == ""


def test_an_unforeseen_failure_is_one_line_without_a_trace(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLOUDCORE_DEBUG", raising=False)
    monkeypatch.setattr("cloudcore.store.admin.db_command", _raising(OSError("disk on fire")))
    assert cli.main(["db", "status"]) == 1
    err = capfd.readouterr().err
    assert err == "cloudcore: OSError: disk on fire (CLOUDCORE_DEBUG=1 shows where)\n"
