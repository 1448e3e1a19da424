"""Cluster unit tests log to their own stderr (an earlier test may have bound structlog to a
stream pytest has closed since)."""

from __future__ import annotations

import pytest

from cloudcore.logging import configure_logging


@pytest.fixture(autouse=True)
def _logging() -> None:
    configure_logging("info")
