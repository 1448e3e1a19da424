"""The life statuses of an actor cell, and a pending stop request."""

from __future__ import annotations

__all__ = [
    "RESTARTING",
    "RUNNING",
    "STATUS_NAMES",
    "STOPPED",
    "STOPPING",
    "SUSPENDED",
    "StopRequest",
]

# Ordered: everything from STOPPING on refuses new messages.
RUNNING, SUSPENDED, RESTARTING, STOPPING, STOPPED = range(5)
STATUS_NAMES = ("running", "suspended", "restarting", "stopping", "stopped")


class StopRequest:
    """Stop with ``reason``; with ``drain``, only once the mailbox is empty."""

    __slots__ = ("drain", "reason")

    def __init__(self, reason: str, drain: bool) -> None:
        self.reason = reason
        self.drain = drain
