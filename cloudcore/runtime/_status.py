"""The life statuses of an actor cell, and a pending stop request."""

from __future__ import annotations

import enum

__all__ = ["RESTARTING", "RUNNING", "STOPPED", "STOPPING", "SUSPENDED", "Status", "StopRequest"]


class Status(enum.IntEnum):
    """Ordered: everything from STOPPING on refuses new messages (``status >= STOPPING``)."""

    RUNNING = 0  # handling messages, or parked waiting for one
    SUSPENDED = 1  # failed; its supervisor is deciding (mail is kept, none handled)
    RESTARTING = 2  # between the two halves of a restart
    STOPPING = 3  # finishing: children stopping, then the ``stopping`` hook
    STOPPED = 4  # gone for good; mail goes to dead letters

    def __str__(self) -> str:
        return self.name.lower()


# Module-level names for the hot path: a global lookup, not an attribute lookup on the class.
RUNNING = Status.RUNNING
SUSPENDED = Status.SUSPENDED
RESTARTING = Status.RESTARTING
STOPPING = Status.STOPPING
STOPPED = Status.STOPPED


class StopRequest:
    """Stop with ``reason``; with ``drain``, only once the mailbox is empty."""

    __slots__ = ("drain", "reason")

    def __init__(self, reason: str, drain: bool) -> None:
        self.reason = reason
        self.drain = drain
