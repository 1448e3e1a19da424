"""A bridge between a Thespian actor system and a cloudcore cluster (the ``thespian`` extra).

:class:`CloudcoreBridge` is a Thespian actor. Told :class:`JoinCluster` (the cloudcore
settings, as a mapping: node id, transport, events), it joins the cloudcore cluster as a node
of its own (a :class:`~cloudcore.cluster.ClusterNode` on an asyncio loop in a thread of the
bridge's process) and then takes, from any Thespian actor:

- :class:`CloudcoreTell` / :class:`CloudcoreAsk`: a cloudcore message for the actor at
  ``path`` on ``node``; an ask is answered with :class:`CloudcoreReply` (the result, or the
  error's type and text).
- :class:`CloudcoreSubscribe`: the cloudcore events of these types (the event bus's
  ``Event``) are sent to the subscriber as they happen.
- :class:`CloudcoreExpose`: makes a cloudcore actor at ``/user/thespian/<name>`` on the
  bridge's node that forwards every message it is told to the Thespian actor that asked (the
  ref cloudcore actors use to reach a Thespian actor); answered with :class:`CloudcoreExposed`
  (the node and path of that ref), or a CloudcoreReply with the error (a name taken).

What crosses into cloudcore is msgpack (msgspec), as everything on the cloudcore wire, never
pickle; between Thespian actors, Thespian's own transport carries these messages. The bridge
connects where its settings say, by default the broker and Redis on 127.0.0.1.

Thespian calls an actor from one thread and has no thread-safe way in: what the loop thread
produces (replies, events, forwarded messages) waits in a queue that the bridge drains on a
Thespian wakeup every :data:`POLL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import msgspec
import structlog
from thespian.actors import Actor as _ThespianActor
from thespian.actors import ActorExitRequest, WakeupMessage

from cloudcore.cluster.node import ClusterNode
from cloudcore.config import Settings
from cloudcore.errors import BusClosed, describe
from cloudcore.events import EventBus, open_event_bus
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, Message

__all__ = [
    "POLL",
    "CloudcoreAsk",
    "CloudcoreBridge",
    "CloudcoreExpose",
    "CloudcoreExposed",
    "CloudcoreReply",
    "CloudcoreSubscribe",
    "CloudcoreTell",
    "JoinCluster",
]

_log = get_logger("cloudcore.cluster.thespian_bridge")

#: Seconds between two looks at what the cloudcore side has for Thespian actors.
POLL = 0.005


@dataclass(frozen=True)
class JoinCluster:
    """Join the cloudcore cluster with these settings (a :class:`~cloudcore.config.Settings`,
    or a mapping ``msgspec.convert``-ed into one: ``{"node": {"id": ...}, "transport":
    {...}}``). Answered ``CloudcoreReply(result=node id)`` once joined, or with the error."""

    settings: Settings | Mapping[str, Any]


@dataclass(frozen=True)
class CloudcoreTell:
    node: str
    path: str
    message: Message


@dataclass(frozen=True)
class CloudcoreAsk:
    node: str
    path: str
    message: Message
    timeout: float = 10.0


@dataclass(frozen=True)
class CloudcoreReply:
    """An ask's answer: ``result``, or ``error`` (the error's type) and ``text``."""

    result: Any = None
    error: str | None = None
    text: str = ""


@dataclass(frozen=True)
class CloudcoreSubscribe:
    types: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloudcoreExpose:
    name: str


@dataclass(frozen=True)
class CloudcoreExposed:
    node: str
    path: str


class _Forward(Actor[Any]):
    """The cloudcore side of a Thespian actor: what it is told goes to that actor."""

    def __init__(self, outbox: queue.SimpleQueue[tuple[Any, Any]], address: Any) -> None:
        self._outbox, self._address = outbox, address

    async def receive(self, message: Any) -> None:
        self._outbox.put((self._address, message))


@dataclass
class _Side:
    """The cloudcore node of the bridge and the loop it runs on."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    node: ClusterNode | None = None
    events: EventBus | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class CloudcoreBridge(_ThespianActor):  # type: ignore[misc]
    """The Thespian actor that joins a cloudcore cluster (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._side: _Side | None = None
        self._outbox: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, WakeupMessage):
            self._drain()
        elif isinstance(message, ActorExitRequest):
            self._leave()
        elif isinstance(message, JoinCluster):
            self._join(message, sender)
        elif self._side is None or self._side.node is None:
            self.send(sender, CloudcoreReply(error="NotJoined", text="send JoinCluster first"))
        elif isinstance(message, CloudcoreTell | CloudcoreAsk):
            self._submit(self._deliver(message, sender))
        elif isinstance(message, CloudcoreSubscribe):
            self._submit(self._follow(message.types, sender))
        elif isinstance(message, CloudcoreExpose):
            self._expose(message.name, sender)

    # ------------------------------------------------------------------ Thespian side

    def _drain(self) -> None:
        while True:
            try:
                address, message = self._outbox.get_nowait()
            except queue.Empty:
                break
            self.send(address, message)
        if self._side is not None:
            self.wakeupAfter(timedelta(seconds=POLL))

    def _join(self, message: JoinCluster, sender: Any) -> None:
        if self._side is not None:
            self.send(sender, CloudcoreReply(error="AlreadyJoined", text="joined already"))
            return
        try:
            settings = message.settings
            if not isinstance(settings, Settings):
                settings = msgspec.convert(settings, Settings)
        except msgspec.ValidationError as exc:
            self.send(sender, CloudcoreReply(error="ConfigError", text=f"settings: {exc}"))
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="cloudcore-bridge", daemon=True)
        thread.start()
        self._side = _Side(loop=loop, thread=thread)
        joined = asyncio.run_coroutine_threadsafe(self._run(settings), loop)
        try:
            node_id = joined.result(timeout=60)
        except Exception as exc:
            self._leave()
            self.send(sender, CloudcoreReply(error=type(exc).__name__, text=describe(exc)))
            return
        self.send(sender, CloudcoreReply(result=node_id))
        self.wakeupAfter(timedelta(seconds=POLL))

    def _expose(self, name: str, sender: Any) -> None:
        side = self._side
        assert side is not None and side.node is not None
        node = side.node

        def spawn() -> str:
            ref = node.system.spawn_under(
                "/user/thespian", _Forward, self._outbox, sender, name=name
            )
            return ref.path

        made: Future[str] = asyncio.run_coroutine_threadsafe(_call(spawn), side.loop)
        try:
            path = made.result(timeout=10)
        except Exception as exc:  # a name taken already, a bad name: said to the asker
            self.send(sender, CloudcoreReply(error=type(exc).__name__, text=describe(exc)))
            return
        self.send(sender, CloudcoreExposed(node=node.node_id, path=path))

    def _submit(self, work: Any) -> None:
        assert self._side is not None
        asyncio.run_coroutine_threadsafe(work, self._side.loop)

    def _leave(self) -> None:
        side, self._side = self._side, None
        if side is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_set(side.stop), side.loop).result(timeout=30)
        side.loop.call_soon_threadsafe(side.loop.stop)
        side.thread.join(timeout=30)

    # ------------------------------------------------------------------ cloudcore side

    async def _run(self, settings: Settings) -> str:
        """Join, then keep the node (and the bus, if events are configured) until told to
        leave; returns the node id once joined (through a future the caller waits on)."""
        side = self._side
        assert side is not None
        # Log lines to stderr (not stdout, which is the host program's); Thespian refuses
        # the stdlib handlers configure_logging would add in an actor's process.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        joined: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def keep() -> None:
            try:
                async with ClusterNode(settings) as node:
                    node.system.spawn(_Group, name="thespian")
                    side.node = node
                    side.events = await open_event_bus(settings)
                    joined.set_result(node.node_id)
                    await side.stop.wait()
                    await side.events.close()
            except Exception as exc:
                if not joined.done():
                    joined.set_exception(exc)
                else:
                    _log.error("thespian_bridge.failed", error=describe(exc))

        asyncio.get_running_loop().create_task(keep(), name="cloudcore-bridge")
        return await joined

    async def _deliver(self, message: CloudcoreTell | CloudcoreAsk, sender: Any) -> None:
        side = self._side
        assert side is not None and side.node is not None
        ref = side.node.ref(message.node, message.path)
        if isinstance(message, CloudcoreTell):
            try:
                ref.tell(message.message)
            except Exception as exc:
                _log.warning("thespian_bridge.tell_failed", path=message.path, error=describe(exc))
            return
        try:
            reply = CloudcoreReply(result=await ref.ask(message.message, timeout=message.timeout))
        except Exception as exc:
            reply = CloudcoreReply(error=type(exc).__name__, text=str(exc))
        self._outbox.put((sender, reply))

    async def _follow(self, types: tuple[str, ...], sender: Any) -> None:
        side = self._side
        assert side is not None and side.events is not None
        try:
            async for event in side.events.subscribe(types=list(types) or None):
                self._outbox.put((sender, event))
        except BusClosed:
            return


class _Group(Actor[Any]):
    """``/user/thespian``: the parent of the refs to Thespian actors."""

    async def receive(self, message: Any) -> None:
        raise TypeError("/user/thespian takes no messages")


async def _call(fn: Any) -> Any:
    return fn()


async def _set(event: asyncio.Event) -> None:
    event.set()
