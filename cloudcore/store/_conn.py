"""What the portable SQL code needs from a backend: connections, a clock, limits."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from cloudcore.errors import InvalidRecord
from cloudcore.logging import get_logger

__all__ = ["Conn", "SqlBase", "check_amounts", "check_limit", "now"]

_MAX_PAGE = 1000
_log = get_logger("cloudcore.store")


class Conn(Protocol):
    """The few calls the store makes on a connection (asyncpg's names, ``$n`` placeholders)."""

    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Any: ...

    async def execute(self, sql: str, *args: Any) -> Any: ...


class SqlBase(ABC):
    """Connections of a backend. Each yields a :class:`Conn` and translates driver errors."""

    #: Called after each commit that wrote outbox events (set up by the backend's __init__).
    _outbox_listeners: list[Callable[[], None]]

    def _outbox_written(self) -> None:
        """Call after committing a write that carried events: wakes the relay."""
        for callback in list(self._outbox_listeners):
            try:
                callback()
            except Exception as exc:  # a listener's bug must not fail the caller's write
                _log.warning("outbox.listener_failed", error=repr(exc))

    @abstractmethod
    def _reader(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads: sees committed state."""

    @abstractmethod
    def _writer(self) -> AbstractAsyncContextManager[Conn]:
        """A connection for single statements, each committed on its own."""

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Conn]:
        """A connection inside a transaction, committed when the block ends, else rolled back."""


def now() -> datetime:
    return datetime.now(UTC)


def check_limit(limit: int) -> None:
    if not 1 <= limit <= _MAX_PAGE:
        raise InvalidRecord(f"limit must be between 1 and {_MAX_PAGE}, not {limit}")


def check_amounts(**amounts: int) -> None:
    for name, value in amounts.items():
        if not isinstance(value, int) or value < 0:
            raise InvalidRecord(f"{name} must be a non-negative integer, not {value!r}")
