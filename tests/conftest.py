"""The test tiers, one directory each, each marked after its directory (``-m component``):

- ``tests/unit``: one unit in-process, no server, no subprocess of ours.
- ``tests/contract``: one suite per interface over every implementation (the store on SQLite and
  PostgreSQL, the event bus in-process and on Redis, the hypervisor driver on libvirt's test
  driver); the server-backed implementations need their server.
- ``tests/component``: several real components together in-process or as ``cloudcore serve``
  subprocesses, on SQLite, the in-process event bus and transport, and libvirt's in-process
  ``test:///`` driver: no external server.
- ``tests/integration``: real external servers (PostgreSQL, Redis, RabbitMQ, libvirtd with QEMU),
  started when absent.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from cloudcore.logging import configure_logging
from tests.clock import LoopClock

TIERS = ("unit", "contract", "component", "integration")
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.resolve().relative_to(_HERE).parts
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


@pytest.fixture
async def loop_clock() -> AsyncIterator[LoopClock]:
    """The test's event loop with a clock the test pushes forward (see tests/clock.py)."""
    clock = LoopClock(asyncio.get_running_loop())
    yield clock
    clock.restore()


class _CurrentStderr:
    """A structlog logger factory writing to whatever ``sys.stderr`` is at each log call."""

    def __call__(self, *args: object) -> structlog.PrintLogger:
        return structlog.PrintLogger(sys.stderr)


@pytest.fixture(autouse=True, scope="session")
def _session_logging() -> None:
    """The suite logs at info (as ``cloudcore serve`` does by default), to the stderr of the
    test running at the time: its captured output."""
    configure_logging("info")
    structlog.configure(logger_factory=_CurrentStderr())


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Undo the logging set-up a test makes, so tests pass in any order.

    ``configure_logging`` (which the CLI's ``main`` and ``cloudcore serve`` call) binds structlog
    and a root handler to the ``sys.stderr`` of the moment: under ``capsys`` a stream that pytest
    closes after the test, so a later test's first log line would raise ``ValueError: I/O
    operation on closed file``."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in handlers:
            root.removeHandler(handler)  # basicConfig's (pytest's own are subclasses)
    root.setLevel(level)
