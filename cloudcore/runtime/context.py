"""What an actor sees of the runtime: :class:`ActorContext`, its ``self.context``.

The context is the actor's only handle on the runtime: its own ref, its place in the tree, its
children, death watch and timers. The runtime's cell implements it; nothing outside
``cloudcore.runtime`` (and the cluster layer built on it) touches a cell.

What runs where. Every method is meant to be called from inside the actor (``__init__``,
``started``, ``receive``, ``stopping``, ``before_restart``), in the actor's own task, and returns
at once: nothing here awaits. Effects that concern the actor itself arrive later as messages in
its mailbox (a ``Terminated``, a timer's message), handled one at a time like any other, so state
is never changed under ``receive``'s feet.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from cloudcore.runtime.actor import Actor
    from cloudcore.runtime.mailbox import Mailbox
    from cloudcore.runtime.ref import ActorRef
    from cloudcore.runtime.system import ActorSystem

__all__ = ["ActorContext"]

#: The messages the actor accepts (contravariant, as in ``ActorRef``).
M = TypeVar("M", contravariant=True)
#: The messages a child accepts.
C = TypeVar("C")


class ActorContext(Protocol[M]):
    """The runtime side of an actor that accepts messages of type ``M``."""

    @property
    def self_ref(self) -> ActorRef[M]:
        """This actor's ref, the same across restarts: give it to others, or tell yourself."""

    @property
    def path(self) -> str:
        """Where the actor lives in the tree (``/user/dc/dc1``)."""

    @property
    def system(self) -> ActorSystem:
        """The actor system this actor belongs to (for lookups by path and top-level spawns)."""

    @property
    def parent(self) -> ActorRef[Any] | None:
        """The parent's ref; None only for the root guardian."""

    @property
    def restarts(self) -> int:
        """How many times this actor has been restarted (0 for the first instance). An actor
        whose constructor arguments may be stale reads this in ``__init__`` or ``started``."""

    @property
    def children(self) -> list[ActorRef[Any]]:
        """The refs of the live children, in start order."""

    def child(self, name: str) -> ActorRef[Any] | None:
        """The ref of the live child called ``name``, or None."""

    def spawn(
        self,
        factory: Callable[..., Actor[C]],
        /,
        *args: Any,
        name: str | None = None,
        mailbox: Mailbox | None = None,
        **kwargs: Any,
    ) -> ActorRef[C]:
        """Create a child from ``factory(*args, **kwargs)`` and return its ref at once.

        The child is constructed now, in the caller's task (so a constructor error is raised
        here); its ``started`` and messages run later in its own task. ``name`` must be unique
        among the live children (ActorNameTaken), non-empty, without ``/`` or a leading ``$``
        (ValueError); without one a unique ``$n`` name is made. ActorStopped if this actor is
        stopping. The child is supervised by this actor's ``supervisor_strategy``.
        """

    def stop(self, ref: ActorRef[Any]) -> None:
        """Ask ``ref`` (a child, or this actor's own ref) to stop after the message it is
        handling; its children stop first. Returns at once; watch it to learn when it is gone."""

    def watch(self, ref: ActorRef[Any]) -> None:
        """Get ``Terminated(actor=ref)`` in the mailbox when ``ref`` stops; at once if it has
        stopped already. Watching twice is watching once."""

    def unwatch(self, ref: ActorRef[Any]) -> None:
        """Stop watching ``ref``; a ``Terminated`` already queued is still delivered."""

    def schedule_once(self, key: Hashable, delay: float, message: M) -> None:
        """Send ``message`` to this actor after ``delay`` seconds; replaces the timer ``key``.
        Timers are cancelled when the actor stops or restarts."""

    def schedule_periodic(
        self, key: Hashable, interval: float, message: M, initial_delay: float | None = None
    ) -> None:
        """Send ``message`` to this actor every ``interval`` seconds at a fixed rate (ticks
        missed while the loop was busy are skipped, not bunched); replaces the timer ``key``.
        ValueError unless ``interval`` > 0."""

    def cancel_timer(self, key: Hashable) -> bool:
        """Cancel the timer ``key``; False if there was none."""
