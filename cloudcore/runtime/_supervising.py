"""What a parent does when a child fails: decide, restart, stop or escalate (OTP supervision).

Functions over :class:`~cloudcore.runtime.cell.ActorCell`, kept apart from the mailbox loop: the
failing child calls ``failed`` in its own task; its parent's ``supervise`` decides at once and,
for a restart, runs the group restart in a supervision task of its own (stop the group in reverse
start order, then start it again in start order).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from cloudcore.errors import RestartIntensityExceeded, describe
from cloudcore.logging import get_logger
from cloudcore.runtime._status import RESTARTING, RUNNING, STOPPING, SUSPENDED, StopRequest
from cloudcore.runtime.actor import Actor
from cloudcore.runtime.supervision import Directive, SupervisorStrategy

if TYPE_CHECKING:
    from cloudcore.runtime.cell import ActorCell

__all__ = ["failed"]

_log = get_logger("cloudcore.runtime")


def failed(cell: ActorCell, error: Exception) -> bool:
    """Called in the actor's task when it raised; True if it goes on (resume)."""
    cell.last_failure = describe(error)
    assert cell._parent is not None
    resumed = supervise(cell._parent, cell, error)
    if resumed:  # the decider took it as an answer (a refusal), not a fault
        _log.info("actor.resumed", actor=cell.path, error=cell.last_failure)
    else:
        _log.error("actor.failed", actor=cell.path, error=cell.last_failure, exc_info=error)
    return resumed


def supervise(parent: ActorCell, child: ActorCell, error: Exception) -> bool:
    """Decide what happens to a failed child; True if the child resumes."""
    strategy: SupervisorStrategy = parent.actor.supervisor_strategy
    try:
        directive = strategy.decider(error)
    except Exception as exc:
        _log.error("actor.decider_failed", actor=parent.path, exc_info=exc)
        directive = Directive.ESCALATE
    if directive is Directive.RESUME:
        return True
    child._status = SUSPENDED
    if parent._stop is not None or parent._status >= STOPPING:
        directive = Directive.STOP  # no restarts while the parent goes away
    delay = 0.0
    if directive is Directive.RESTART:
        allowed = allow_restart(child, strategy)
        if allowed is None:
            cause = error
            error = RestartIntensityExceeded(
                f"{child.path} failed more than {strategy.max_restarts} time(s) "
                f"within {strategy.within:g} s: {describe(cause)}"
            )
            error.__cause__ = cause
            directive = Directive.ESCALATE
        else:
            delay = allowed
    if directive is Directive.ESCALATE:
        escalate(parent, child, error)
    elif directive is Directive.STOP:
        child._request_stop(f"failed: {describe(error)}", drain=False)
    else:
        supervise_task(parent, restart_children(parent, child, error, delay))
    return False


def allow_restart(cell: ActorCell, strategy: SupervisorStrategy) -> float | None:
    """Record a restart; the backoff delay, or None if intensity is exceeded."""
    now = cell._loop.time()
    times = cell._restart_times
    if times is None:
        times = cell._restart_times = deque()
    while times and now - times[0] > strategy.within:
        times.popleft()
    if len(times) >= strategy.max_restarts:
        return None
    times.append(now)
    return strategy.backoff.delay(len(times) - 1) if strategy.backoff else 0.0


def escalate(parent: ActorCell, child: ActorCell, error: Exception) -> None:
    grandparent = parent._parent
    if grandparent is None or grandparent._parent is None:
        # A guardian has no one to escalate to: the failing top-level actor stops.
        _log.error("actor.escalated_to_guardian", actor=child.path, error=describe(error))
        child._request_stop(f"failed: {describe(error)}", drain=False)
        return
    _log.warning("actor.escalated", actor=parent.path, child=child.path, error=describe(error))
    parent.last_failure = describe(error)
    task = parent._task
    parent._status = SUSPENDED
    if task is not None and task is not asyncio.current_task():
        task.cancel()
    if supervise(grandparent, parent, error):  # parent resumed: its suspended child goes on too
        parent._status = RUNNING
        child._status = RUNNING
        for member in (parent, child):
            if member._mailbox and (member._task is None or member._task.done()):
                member._start_task(False)


def supervise_task(parent: ActorCell, coro: Any) -> None:
    task = parent._loop.create_task(coro)
    if parent._supervising is None:
        parent._supervising = set()
    parent._supervising.add(task)
    task.add_done_callback(parent._supervising.discard)


async def restart_children(
    parent: ActorCell, child: ActorCell, error: Exception, delay: float
) -> None:
    if delay:
        await asyncio.sleep(delay)
    if parent._stop is not None or parent._status >= STOPPING:
        return
    strategy = parent.actor.supervisor_strategy
    siblings = list(parent._children.values()) if parent._children else []
    group = [
        c
        for c in strategy.restart_group(siblings, child)
        if c._stop is None and c._status < STOPPING
    ]
    for member in reversed(group):
        await halt(member, error)
    for member in group:
        resume_fresh(member)


async def halt(cell: ActorCell, error: Exception) -> None:
    """First half of a restart: interrupt, drop timers and watches, stop the children,
    call ``before_restart`` on the old instance."""
    cell._status = RESTARTING
    await cell._cancel_task()
    cell._cancel_timers()
    cell._unwatch_all()
    if cell._children:
        for child in reversed(list(cell._children.values())):
            child._request_stop("stopped", drain=False)
        await asyncio.gather(*(c._wait_stopped() for c in list(cell._children.values())))
    try:
        await cell.actor.before_restart(error)
    except Exception as exc:
        _log.error("actor.hook_failed", actor=cell.path, hook="before_restart", exc_info=exc)


def resume_fresh(cell: ActorCell) -> None:
    """Second half of a restart: a fresh instance, then ``started`` and the kept mailbox."""
    if cell._stop is not None:  # asked to stop while restarting
        cell._status = STOPPING
        cell._finalize(cell._stop.reason)
        return
    try:
        cell.actor = cell._instantiate()
    except Exception as exc:
        cell.last_failure = describe(exc)
        _log.error("actor.restart_failed", actor=cell.path, exc_info=exc)
        cell._stop = StopRequest(f"failed: {describe(exc)}", drain=False)
        cell._status = STOPPING
        cell._finalize(cell._stop.reason)
        return
    cell.restarts += 1
    cell._status = RUNNING
    _log.info("actor.restarted", actor=cell.path, restarts=cell.restarts)
    if type(cell.actor).started is not Actor.started or cell._mailbox:
        cell._start_task(type(cell.actor).started is not Actor.started)
