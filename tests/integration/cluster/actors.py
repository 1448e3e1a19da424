"""Messages and actors the cluster tests run on every node (test processes and pytest)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import TYPE_CHECKING, Any

from cloudcore.cluster import MessageRegistry
from cloudcore.runtime import Actor, ActorRef, Message, Terminated

if TYPE_CHECKING:
    from cloudcore.cluster import ClusterNode


class Add(Message, frozen=True, kw_only=True):
    n: int


class Total(Message, frozen=True, kw_only=True):
    pass


class WhereAmI(Message, frozen=True, kw_only=True):
    pass


class AskOther(Message, frozen=True, kw_only=True):
    """Ask ``other`` for its total and answer with it (a ref inside a message)."""

    other: ActorRef


class TellBack(Message, frozen=True, kw_only=True):
    """Tell ``to`` Add(n) (a ref to an actor on the asking node)."""

    to: ActorRef
    n: int


class Sleep(Message, frozen=True, kw_only=True):
    """Sleep ``seconds`` in the handler; tell ``started`` Sleeping first, if given."""

    seconds: float
    started: ActorRef | None = None


class Sleeping(Message, frozen=True, kw_only=True):
    """An actor has started handling a Sleep."""

    node: str


class Crash(Message, frozen=True, kw_only=True):
    """Kill the whole node process while handling this (a poison message)."""


class Command(Message, frozen=True, kw_only=True):
    """A state-changing command with an id the recorder writes down."""

    id: int


class Members(Message, frozen=True, kw_only=True):
    pass


CounterMessage = Add | Total | WhereAmI | AskOther | TellBack | Sleep | Crash


class Counter(Actor[CounterMessage]):
    def __init__(self, start: int = 0) -> None:
        self.total = start

    async def receive(self, message: CounterMessage) -> Any:
        match message:
            case Add(n=n):
                self.total += n
            case Total():
                return self.total
            case WhereAmI():
                return self.context.system.node_id
            case AskOther(other=other):
                return await other.ask(Total(), timeout=5)
            case TellBack(to=to, n=n):
                to.tell(Add(n=n))
            case Sleep(seconds=seconds, started=started):
                if started is not None:
                    started.tell(Sleeping(node=self.context.system.node_id))
                await asyncio.sleep(seconds)  # a long handler: the test's point
            case Crash():
                os._exit(3)
        return None


class Recorder(Actor[Command]):
    """Writes every handled command id to SQLite (duplicates would show as repeated rows)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS handled (id INTEGER NOT NULL)")

    async def receive(self, message: Command) -> None:
        self.db.execute("INSERT INTO handled (id) VALUES (?)", (message.id,))

    async def stopping(self) -> None:
        self.db.close()


class Watcher(Actor[Terminated]):
    """Puts every Terminated it gets on ``seen``."""

    def __init__(self, target: ActorRef, seen: asyncio.Queue[Terminated]) -> None:
        self.seen = seen
        self.context.watch(target)

    async def receive(self, message: Terminated) -> None:
        self.seen.put_nowait(message)


class Inbox(Actor[Sleeping]):
    """Puts every message it gets on ``seen``."""

    def __init__(self, seen: asyncio.Queue[Sleeping]) -> None:
        self.seen = seen

    async def receive(self, message: Sleeping) -> None:
        self.seen.put_nowait(message)


class Probe(Actor[Members]):
    """Answers with this node's cluster view: {node: status}."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    async def receive(self, message: Members) -> dict[str, str]:
        return {m.node: m.status for m in self.node.members()}


MESSAGES = (Add, Total, WhereAmI, AskOther, TellBack, Sleep, Sleeping, Crash, Command, Members)


def registry() -> MessageRegistry:
    """A registry where these messages win over same-named ones of other test modules (the
    pytest process imports them all)."""
    registry = MessageRegistry()
    for cls in MESSAGES:
        registry.register(cls)
    return registry


def handled_ids(path: str) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT id FROM handled")]
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        db.close()
