"""Messages the runtime itself sends to actors."""

from __future__ import annotations

from typing import Any

from cloudcore.runtime.message import Message
from cloudcore.runtime.ref import ActorRef

__all__ = ["Terminated"]


class Terminated(Message, frozen=True, kw_only=True):
    """A watched actor stopped. ``reason`` is ``stopped``, ``failed: <error>``, ``shutdown`` or
    (across nodes) ``node-down``."""

    actor: ActorRef[Any]  # whatever it accepted, the runtime cannot know
    reason: str
