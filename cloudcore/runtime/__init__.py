"""The asyncio actor runtime: actors, refs, supervision, death watch, timers, dead letters.

::

    async with ActorSystem("node-1") as system:
        counter = system.spawn(Counter, name="counter")
        counter.tell(Increment(by=2))
        total = await counter.ask(Get(), timeout=1.0)
"""

from cloudcore.runtime.actor import Actor
from cloudcore.runtime.cell import ActorCell
from cloudcore.runtime.context import ActorContext
from cloudcore.runtime.deadletters import DeadLetter, DeadLetters
from cloudcore.runtime.introspection import ActorInfo
from cloudcore.runtime.mailbox import Mailbox, Overflow
from cloudcore.runtime.message import Message, check_message
from cloudcore.runtime.ref import ActorRef, LocalActorRef
from cloudcore.runtime.signals import Terminated
from cloudcore.runtime.supervision import (
    Backoff,
    Directive,
    Strategy,
    SupervisorStrategy,
    restart_on_error,
)
from cloudcore.runtime.system import ActorSystem

__all__ = [
    "Actor",
    "ActorCell",
    "ActorContext",
    "ActorInfo",
    "ActorRef",
    "ActorSystem",
    "Backoff",
    "DeadLetter",
    "DeadLetters",
    "Directive",
    "LocalActorRef",
    "Mailbox",
    "Message",
    "Overflow",
    "Strategy",
    "SupervisorStrategy",
    "Terminated",
    "check_message",
    "restart_on_error",
]
