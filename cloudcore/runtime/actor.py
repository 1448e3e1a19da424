"""The :class:`Actor` base class: what a user of the runtime subclasses."""

from __future__ import annotations

import contextvars
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from cloudcore.errors import ActorError
from cloudcore.runtime.supervision import SupervisorStrategy

if TYPE_CHECKING:
    from typing import Self

    from cloudcore.runtime.cell import ActorCell
    from cloudcore.runtime.context import ActorContext

__all__ = ["Actor"]

M = TypeVar("M")

# The cell whose actor is being constructed, so that ``self.context`` works inside ``__init__``.
_constructing: contextvars.ContextVar[ActorCell | None] = contextvars.ContextVar(
    "cloudcore_constructing", default=None
)


class Actor(ABC, Generic[M]):
    """An actor: private state changed only by the messages it receives, one at a time.

    Subclasses implement :meth:`receive`, usually as ``match message:`` over a typed union ending
    in ``assert_never``. The value ``receive`` returns is the reply to an ``ask`` (ignored for a
    ``tell``); an exception it raises goes back to the asker and to the supervisor.

    Actors are created by ``spawn`` (never called directly), which sets :attr:`context` before
    ``__init__`` runs. A restart creates a fresh instance with the same arguments.
    """

    #: How this actor supervises its children.
    supervisor_strategy: ClassVar[SupervisorStrategy] = SupervisorStrategy()

    #: The runtime side: own ref, parent, children, watch, timers. See ActorContext.
    context: ActorContext[M]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        cell = _constructing.get()
        if cell is None:
            raise ActorError(f"{cls.__qualname__} is an actor: create it with spawn(), not a call")
        self = super().__new__(cls)
        self.context = cell
        return self

    @abstractmethod
    async def receive(self, message: M) -> Any:
        """Handle one message; the return value answers an ``ask``."""

    async def started(self) -> None:
        """Called before the first message, after spawn and after every restart."""

    async def stopping(self) -> None:
        """Called once when the actor stops, after its children have stopped."""

    async def before_restart(self, error: Exception) -> None:
        """Called on the old instance before it is replaced, after its children have stopped."""
