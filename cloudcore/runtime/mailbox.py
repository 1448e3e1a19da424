"""Mailbox settings: an optional bound and what happens when it is reached."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Mailbox", "Overflow"]


class Overflow(enum.Enum):
    """What a full bounded mailbox does with one more message."""

    #: ``tell`` raises MailboxFull in the sender (an ``ask`` fails with it).
    REFUSE = "refuse"
    #: The message goes to dead letters; the sender is not told (an ``ask`` fails at once).
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Mailbox:
    """``capacity=None`` is unbounded. Order is FIFO, so each sender's messages keep their order."""

    capacity: int | None = None
    overflow: Overflow = Overflow.REFUSE

    def __post_init__(self) -> None:
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"mailbox capacity must be >= 1 or None, not {self.capacity}")
