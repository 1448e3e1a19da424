"""Message types shared by the runtime tests."""

from __future__ import annotations

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
    to: ActorRef
    n: int


class Spawn(Message, frozen=True, kw_only=True):
    name: str
