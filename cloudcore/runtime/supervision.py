"""Supervision as in Erlang/OTP: what a parent does when a child fails.

A parent's ``supervisor_strategy`` applies to all of its children. The decider maps the exception to
a :class:`Directive`; restarts are limited by intensity (``max_restarts`` within ``within``
seconds, counted per child); past it the failure escalates to the parent's own supervisor.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = [
    "Backoff",
    "Directive",
    "Strategy",
    "SupervisorStrategy",
    "restart_on_error",
]

T = TypeVar("T")


class Directive(enum.Enum):
    RESUME = "resume"  # keep the instance and its state; go on with the next message
    RESTART = "restart"  # a fresh instance; the mailbox is kept, the failing message is not
    STOP = "stop"  # stop the child for good; watchers get Terminated
    ESCALATE = "escalate"  # fail the parent with the same exception


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"  # restart only the failed child
    ONE_FOR_ALL = "one_for_all"  # restart every child
    REST_FOR_ONE = "rest_for_one"  # restart the failed child and those started after it


def restart_on_error(error: Exception) -> Directive:
    """The default decider: any exception restarts the child."""
    return Directive.RESTART


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before the n-th restart within the intensity window: ``initial * factor**n``,
    capped at ``maximum``."""

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        return float(min(self.maximum, self.initial * self.factor**attempt))


@dataclass(frozen=True, slots=True)
class SupervisorStrategy:
    """How a parent supervises its children.

    The default matches OTP's: one_for_one, and more than 1 restart in 5 s escalates.
    """

    kind: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 1
    within: float = 5.0
    decider: Callable[[Exception], Directive] = field(default=restart_on_error)
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.within <= 0:
            raise ValueError("max_restarts must be >= 0 and within > 0")

    def restart_group(self, children: Sequence[T], failed: T) -> list[T]:
        """The children to restart, in start order, when ``failed`` is restarted."""
        if self.kind is Strategy.ONE_FOR_ONE:
            return [failed]
        if self.kind is Strategy.ONE_FOR_ALL:
            return list(children)
        return list(children[children.index(failed) :])
