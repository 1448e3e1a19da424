"""What becomes of mail an actor cannot take: dead letters, and the asker told why."""

from __future__ import annotations

from typing import Any

from cloudcore.errors import ActorStopped, MailboxFull
from cloudcore.runtime.deadletters import DeadLetters
from cloudcore.runtime.ref import _Ask

__all__ = ["overflow", "refuse"]


def refuse(dead_letters: DeadLetters, path: str, item: Any, reason: str) -> None:
    """``item`` (a message, or an ask) reached a stopped actor, or was left in its mailbox."""
    message = item.message if type(item) is _Ask else item
    dead_letters.publish(path, message, reason)
    if type(item) is _Ask and not item.future.done():
        item.future.set_exception(ActorStopped(f"{path} is stopped ({reason})"))


def overflow(dead_letters: DeadLetters, path: str, item: Any, capacity: int, drop: bool) -> None:
    """``item`` found the bounded mailbox full: dropped to dead letters with ``drop``, else
    refused; an asker gets MailboxFull either way, a teller only when it is refused."""
    message = item.message if type(item) is _Ask else item
    error = MailboxFull(f"mailbox of {path} is full ({capacity} messages)")
    if drop:
        dead_letters.publish(path, message, "mailbox full")
        if type(item) is _Ask:
            item.future.set_exception(error)
    elif type(item) is _Ask:
        item.future.set_exception(error)
    else:
        raise error
