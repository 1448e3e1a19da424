"""Dead letters: messages that reached no actor (stopped, full mailbox, expired ask)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["DeadLetter", "DeadLetters"]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    recipient: str
    message: Any
    reason: str
    at: float

    @property
    def message_type(self) -> str:
        return type(self.message).__name__


class DeadLetters:
    """Keeps the most recent dead letters and a total count, and tells subscribers of each one."""

    def __init__(self, history: int = 1000) -> None:
        self._recent: deque[DeadLetter] = deque(maxlen=history)
        self._subscribers: list[Callable[[DeadLetter], None]] = []
        self.count = 0

    def publish(self, recipient: str, message: Any, reason: str) -> None:
        letter = DeadLetter(recipient=recipient, message=message, reason=reason, at=time.time())
        self.count += 1
        self._recent.append(letter)
        for callback in tuple(self._subscribers):
            callback(letter)

    def subscribe(self, callback: Callable[[DeadLetter], None]) -> Callable[[], None]:
        """Call ``callback`` for every new dead letter; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def recent(self) -> list[DeadLetter]:
        """The most recent dead letters, oldest first."""
        return list(self._recent)
