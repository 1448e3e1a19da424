"""Private servers for the restart tests, always stopped and removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.state.servers import PrivatePostgres, PrivateRedis


@pytest.fixture
def postgres_server() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.remove()
