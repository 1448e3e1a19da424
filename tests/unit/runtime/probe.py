"""A test actor that records its lifecycle and does what its messages say."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from cloudcore.runtime import Actor, SupervisorStrategy, Terminated

from .messages import (
    Cancel,
    Child,
    Children,
    Every,
    Fail,
    Forward,
    Get,
    Once,
    Ping,
    Sleep,
    Spawn,
    Unwatch,
    Watch,
)


class Probe(Actor[Any]):
    """Counts Pings (state a restart must reset), records hooks as (hook, path) tuples."""

    def __init__(self, record: Callable[[Any], None]) -> None:
        self.record = record
        self.count = 0

    async def started(self) -> None:
        self.record(("started", self.context.path))

    async def stopping(self) -> None:
        self.record(("stopping", self.context.path))

    async def before_restart(self, error: Exception) -> None:
        self.record(("before_restart", self.context.path, type(error).__name__))

    async def receive(self, message: Any) -> Any:
        match message:
            case Ping(n=n):
                self.count += 1
                self.record(("ping", self.context.path, n))
                return self.count
            case Get():
                return self.count
            case Fail(reason=reason):
                raise RuntimeError(reason)
            case Sleep(seconds=seconds):
                self.record(("sleeping", self.context.path))
                await asyncio.sleep(seconds)
                self.record(("slept", self.context.path))
                return seconds
            case Forward(to=to, n=n):
                to.tell(Ping(n=n))
            case Spawn(name=name):
                return self.context.spawn(type(self), self.record, name=name)
            case Terminated(actor=actor, reason=reason):
                self.record(("terminated", actor.path, reason))
            case Watch(ref=ref):
                self.context.watch(ref)
            case Unwatch(ref=ref):
                self.context.unwatch(ref)
            case Children():
                return self.context.children
            case Child(name=name):
                return self.context.child(name)
            case Once(key=key, delay=delay, message=tick):
                self.context.schedule_once(key, delay, tick)
            case Every(key=key, interval=interval, message=tick):
                self.context.schedule_periodic(key, interval, tick)
            case Cancel(key=key):
                return self.context.cancel_timer(key)
        return None


def supervising(strategy: SupervisorStrategy) -> type[Probe]:
    """A Probe class whose children are supervised with ``strategy``."""

    class Supervisor(Probe):
        supervisor_strategy: ClassVar[SupervisorStrategy] = strategy

    return Supervisor
