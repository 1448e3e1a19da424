"""What a parent does when a child fails: decide, restart, stop or escalate (OTP supervision).

Functions over the supervision interface of :class:`~cloudcore.runtime.cell.ActorCell` (its
``parent_cell``, ``leaving``, ``suspend``/``interrupt``/``resume``, ``restart_times``,
``run_supervision``, ``clear_for_restart``/``renew``, ``request_stop``), kept apart from the
mailbox loop: the failing child calls ``failed`` in its own task; its parent's ``supervise``
decides at once and, for a restart, runs the group restart in a supervision task of its own (stop
the group in reverse start order, then start it again in start order).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cloudcore.errors import RestartIntensityExceeded, describe
from cloudcore.logging import get_logger
from cloudcore.runtime.supervision import Directive, SupervisorStrategy

if TYPE_CHECKING:
    from cloudcore.runtime.cell import ActorCell

__all__ = ["failed", "halt"]

_log = get_logger("cloudcore.runtime")


def failed(cell: ActorCell, error: Exception) -> bool:
    """Called in the actor's task when it raised; True if it goes on (resume)."""
    cell.last_failure = describe(error)
    assert cell.parent_cell is not None
    resumed = supervise(cell.parent_cell, cell, error)
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
    child.suspend()
    if parent.leaving:
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
        child.request_stop(f"failed: {describe(error)}", drain=False)
    else:
        parent.run_supervision(restart_children(parent, child, error, delay))
    return False


def allow_restart(cell: ActorCell, strategy: SupervisorStrategy) -> float | None:
    """Record a restart; the backoff delay, or None if intensity is exceeded."""
    now = asyncio.get_running_loop().time()
    times = cell.restart_times()
    while times and now - times[0] > strategy.within:
        times.popleft()
    if len(times) >= strategy.max_restarts:
        return None
    times.append(now)
    return strategy.backoff.delay(len(times) - 1) if strategy.backoff else 0.0


def escalate(parent: ActorCell, child: ActorCell, error: Exception) -> None:
    grandparent = parent.parent_cell
    if grandparent is None or grandparent.parent_cell is None:
        # A guardian has no one to escalate to: the failing top-level actor stops.
        _log.error("actor.escalated_to_guardian", actor=child.path, error=describe(error))
        child.request_stop(f"failed: {describe(error)}", drain=False)
        return
    _log.warning("actor.escalated", actor=parent.path, child=child.path, error=describe(error))
    parent.last_failure = describe(error)
    parent.interrupt()
    if supervise(grandparent, parent, error):  # parent resumed: its suspended child goes on too
        parent.resume()
        child.resume()


async def restart_children(
    parent: ActorCell, child: ActorCell, error: Exception, delay: float
) -> None:
    if delay:
        await asyncio.sleep(delay)
    if parent.leaving:
        return
    strategy = parent.actor.supervisor_strategy
    group = [c for c in strategy.restart_group(parent.child_cells(), child) if not c.leaving]
    for member in reversed(group):
        await halt(member, error)
    for member in group:
        member.renew()


async def halt(cell: ActorCell, error: Exception) -> None:
    """First half of a restart: interrupt, drop timers and watches, stop the children,
    call ``before_restart`` on the old instance."""
    await cell.clear_for_restart()
    try:
        await cell.actor.before_restart(error)
    except Exception as exc:
        _log.error("actor.hook_failed", actor=cell.path, hook="before_restart", exc_info=exc)
