"""Every driver-level connection failure of asyncpg leaves the PostgreSQL store as a retryable
BackendUnavailable (a 503 with Retry-After at the gateway, a retry in an actor), never as a
bare driver error (a 500)."""

from __future__ import annotations

import asyncpg.exceptions as pg  # type: ignore[import-untyped]
import pytest

from cloudcore.errors import BackendUnavailable
from cloudcore.store.postgres import _translate


@pytest.mark.parametrize(
    "failure",
    [
        pg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        pg.InterfaceError("cannot perform operation: another operation is in progress"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CannotConnectNowError("the database system is shutting down"),
        pg.TooManyConnectionsError("sorry, too many clients already"),
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_connection_failure_is_a_retryable_backend_unavailable(failure: Exception) -> None:
    translated = _translate(failure, "postgresql://db")
    assert isinstance(translated, BackendUnavailable)
    assert translated.retryable
    assert "postgresql://db" in str(translated)
