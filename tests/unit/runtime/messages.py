"""Message types shared by the runtime tests."""

from __future__ import annotations

from typing import Any

from cloudcore.runtime import ActorRef, Message


class Ping(Message, frozen=True, kw_only=True):
    n: int = 0


class Get(Message, frozen=True, kw_only=True):
    pass


class Fail(Message, frozen=True, kw_only=True):
    reason: str = "boom"


class Sleep(Message, frozen=True, kw_only=True):
    seconds: float


class Forward(Message, frozen=True, kw_only=True):
    to: ActorRef[Any]
    n: int


class Spawn(Message, frozen=True, kw_only=True):
    name: str


class Watch(Message, frozen=True, kw_only=True):
    """Watch ``ref`` (through the actor's context)."""

    ref: ActorRef[Any]


class Unwatch(Message, frozen=True, kw_only=True):
    ref: ActorRef[Any]


class Children(Message, frozen=True, kw_only=True):
    """Reply with ``context.children``."""


class Child(Message, frozen=True, kw_only=True):
    """Reply with ``context.child(name)``."""

    name: str


class Every(Message, frozen=True, kw_only=True):
    """Start a periodic timer ``key`` sending ``message``."""

    key: str
    interval: float
    message: Ping


class Once(Message, frozen=True, kw_only=True):
    key: str
    delay: float
    message: Ping


class Cancel(Message, frozen=True, kw_only=True):
    """Cancel the timer ``key``; replies with what cancel_timer returned."""

    key: str
