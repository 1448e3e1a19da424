"""Actor references: the only way to reach an actor.

A ref stays valid across restarts of its actor (it names the actor, not the instance), is
hashable, prints as the actor's path and can travel inside messages.

``ActorRef[M]`` is generic in the messages the actor accepts, so mypy checks what is sent:
``spawn(HostActor, ...)`` returns an ``ActorRef[HostMessage]`` and ``tell(GetVM())`` to it is
a type error unless ``GetVM`` is in that union. The parameter is contravariant: a ref that takes
``A | B`` can stand where a ref that takes ``A`` is wanted (a ``reply_to`` field names only
the reply it gets). Refs found at run time (``lookup``, ``children``, a ``Terminated``) are
``ActorRef[Any]``: the runtime cannot know what they accept.

What runs where: ``tell`` and ``ask`` only append to the mailbox, in the caller's task; the
message is handled later in the actor's own task. ``ask`` waits in the caller's task.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cloudcore.errors import AskTimeout
from cloudcore.runtime.message import _valid_types, check_message

if TYPE_CHECKING:
    from cloudcore.runtime.cell import ActorCell

__all__ = ["ActorRef", "LocalActorRef"]

#: The messages a ref accepts (contravariant: see the module docstring).
M = TypeVar("M", contravariant=True)


class ActorRef(Generic[M]):
    """The interface every reference implements, whatever node the actor lives on."""

    __slots__ = ("path",)

    path: str

    @property
    def node(self) -> str:
        """The id of the node the actor lives on."""
        raise NotImplementedError

    def tell(self, message: M) -> None:
        """Send ``message`` and return at once.

        Raises InvalidMessage (a TypeError) if it is not a frozen, tagged msgspec.Struct, and
        MailboxFull if a bounded mailbox refuses it. A message to a stopped actor goes to dead
        letters.
        """
        raise NotImplementedError

    async def ask(self, message: M, timeout: float | None = None) -> Any:
        """Send ``message`` and wait for the value the actor's ``receive`` returns.

        The reply is typed ``Any``: ``receive`` answers each message type with its own type,
        which a union of messages cannot express; annotate the variable that takes it.

        Raises AskTimeout (a TimeoutError) after ``timeout`` seconds (default: the runtime's
        ask_timeout), ActorStopped at once if the actor is stopped, or the exception ``receive``
        raised. A request still queued when its deadline passes is not handled.
        """
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the actor to stop after the message it is handling; its children stop first."""
        raise NotImplementedError

    async def stopped(self) -> None:
        """Wait until the actor has stopped."""
        raise NotImplementedError

    def _add_watcher(self, watcher: ActorCell) -> None:
        """Death watch: ``watcher`` gets Terminated when this actor stops."""
        raise NotImplementedError

    def _remove_watcher(self, watcher: ActorCell) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The actor's name among its siblings: the last segment of its path."""
        return self.path.rpartition("/")[2]

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.node}:{self.path}>"


class LocalActorRef(ActorRef[M]):
    """A reference to an actor in this process."""

    __slots__ = ("_cell",)

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell
        self.path = cell.path

    @property
    def node(self) -> str:
        return self._cell.system.node_id

    def tell(self, message: M) -> None:
        if type(message) not in _valid_types:
            check_message(message)
        self._cell._enqueue(message)

    async def ask(self, message: M, timeout: float | None = None) -> Any:
        if type(message) not in _valid_types:
            check_message(message)
        cell = self._cell
        loop = cell._loop
        future = loop.create_future()
        cell._enqueue(_Ask(message, future))
        if future.done():  # refused at once (stopped, full mailbox): no timer needed
            return await future
        if timeout is None:
            timeout = cell.system.ask_timeout
        timer = loop.call_later(timeout, _expire, future, self.path, message, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def stop(self) -> None:
        self._cell.request_stop("stopped", drain=False)

    async def stopped(self) -> None:
        await self._cell.wait_stopped()

    def _add_watcher(self, watcher: ActorCell) -> None:
        watcher.watch_cell(self._cell)

    def _remove_watcher(self, watcher: ActorCell) -> None:
        watcher.unwatch_cell(self._cell)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalActorRef) and other._cell is self._cell

    def __hash__(self) -> int:
        return hash(self.path)


class _Ask:
    """A message that expects a reply, as it sits in a mailbox."""

    __slots__ = ("future", "message")

    def __init__(self, message: Any, future: asyncio.Future[Any]) -> None:
        self.message = message
        self.future = future


def _expire(future: asyncio.Future[Any], path: str, message: Any, timeout: float) -> None:
    if not future.done():
        future.set_exception(
            AskTimeout(f"no reply from {path} to {type(message).__name__} within {timeout:g} s")
        )
