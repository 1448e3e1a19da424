"""The runtime side of one actor, which the actor sees as ``self.context``.

A cell owns the mailbox and runs the actor's messages one at a time in an asyncio task of its own
(so ``asyncio.timeout`` and context variables work inside ``receive``). The task is created on the
first message and parks on a future while the mailbox is empty; an actor that never receives a
message costs no task at all.

Lifecycle changes that touch several actors (restarting a group of siblings, stopping a subtree)
run in the parent's supervision task or in each actor's own task, never half inside a ``receive``.

Below: the :class:`~cloudcore.runtime.context.ActorContext` the actor uses; delivery and the
message loop (the hot path); a runtime-internal interface for ``_supervising`` and the system.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

from cloudcore.errors import (
    ActorError,
    ActorInterrupted,
    ActorNameTaken,
    ActorStopped,
    describe,
)
from cloudcore.logging import get_logger
from cloudcore.runtime._status import RESTARTING as _RESTARTING
from cloudcore.runtime._status import RUNNING as _RUNNING
from cloudcore.runtime._status import STOPPED as _STOPPED
from cloudcore.runtime._status import STOPPING as _STOPPING
from cloudcore.runtime._status import SUSPENDED as _SUSPENDED
from cloudcore.runtime._status import StopRequest as _StopRequest
from cloudcore.runtime._supervising import failed
from cloudcore.runtime._timers import Timers
from cloudcore.runtime._undeliverable import overflow, refuse
from cloudcore.runtime.actor import Actor, _constructing
from cloudcore.runtime.mailbox import Mailbox, Overflow
from cloudcore.runtime.message import check_message
from cloudcore.runtime.ref import ActorRef, LocalActorRef, _Ask
from cloudcore.runtime.signals import Terminated

if TYPE_CHECKING:
    from cloudcore.runtime.system import ActorSystem

__all__ = ["ActorCell", "ActorFactory"]

_log = get_logger("cloudcore.runtime")

ActorFactory = Callable[..., Actor[Any]]
C = TypeVar("C")


class ActorCell:
    """One actor's mailbox, task, children, watches and timers; the actor's ``context``.

    Implements :class:`~cloudcore.runtime.context.ActorContext` (checked where ``Actor.context``
    is set). Every collection a cell may need (mailbox, children, watchers, watched, timers,
    restart times, stop waiters, supervision tasks) starts as ``None`` and is made on first
    use: most actors are idle leaves that never watch, schedule, fail or have children, and
    ``scripts/bench runtime`` (``--spawn-only 100000``) measured 701 bytes per idle actor this
    way against 3,076 with the seven collections made eagerly (4.4 x): a node holding a few
    hundred thousand VM and host actors keeps that memory. The cost is a ``None`` test on use.
    """

    __slots__ = (
        "_capacity",
        "_children",
        "_current",
        "_drop_overflow",
        "_factory",
        "_loop",
        "_mailbox",
        "_name_seq",
        "_restart_times",
        "_status",
        "_stop",
        "_stop_waiters",
        "_supervising",
        "_task",
        "_timers",
        "_waiter",
        "_watchers",
        "_watching",
        "actor",
        "last_failure",
        "name",
        "parent_cell",
        "path",
        "processed",
        "ref",
        "restarts",
        "system",
    )

    def __init__(
        self,
        system: ActorSystem,
        parent: ActorCell | None,
        name: str,
        factory: tuple[ActorFactory, tuple[Any, ...], dict[str, Any]],
        mailbox: Mailbox | None,
    ) -> None:
        self.system = system
        self._loop = system._loop
        self.parent_cell = parent
        self.name = name
        if parent is None:
            self.path = "/"
        elif parent.parent_cell is None:
            self.path = "/" + name
        else:
            self.path = parent.path + "/" + name
        self.ref: ActorRef[Any] = LocalActorRef(self)
        self._factory = factory
        self._mailbox: deque[Any] | None = None
        self._capacity = mailbox.capacity if mailbox else None
        self._drop_overflow = bool(mailbox and mailbox.overflow is Overflow.DROP)
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._status = _RUNNING
        self._stop: _StopRequest | None = None
        self._current: asyncio.Future[Any] | None = None
        self._children: dict[str, ActorCell] | None = None
        self._watchers: set[ActorCell] | None = None
        self._watching: set[ActorCell] | None = None
        self._timers: Timers | None = None
        self._restart_times: deque[float] | None = None
        self._stop_waiters: list[asyncio.Future[None]] | None = None
        self._supervising: set[asyncio.Task[None]] | None = None
        self._name_seq = 0
        self.processed = 0
        self.restarts = 0
        self.last_failure: str | None = None
        self.actor: Actor[Any] = self._instantiate()

    # ------------------------------------------------------------------ ActorContext

    @property
    def self_ref(self) -> ActorRef[Any]:
        return self.ref

    @property
    def parent(self) -> ActorRef[Any] | None:
        return self.parent_cell.ref if self.parent_cell is not None else None

    @property
    def children(self) -> list[ActorRef[Any]]:
        return [c.ref for c in self._children.values()] if self._children else []

    def child(self, name: str) -> ActorRef[Any] | None:
        cell = self._children.get(name) if self._children else None
        return cell.ref if cell is not None else None

    def spawn(
        self,
        factory: Callable[..., Actor[C]],
        /,
        *args: Any,
        name: str | None = None,
        mailbox: Mailbox | None = None,
        **kwargs: Any,
    ) -> ActorRef[C]:
        return self.spawn_cell(factory, args, kwargs, name, mailbox).ref

    def stop(self, ref: ActorRef[Any]) -> None:
        ref.stop()

    def watch(self, ref: ActorRef[Any]) -> None:
        ref._add_watcher(self)

    def unwatch(self, ref: ActorRef[Any]) -> None:
        ref._remove_watcher(self)

    def schedule_once(self, key: Hashable, delay: float, message: Any) -> None:
        check_message(message)
        self._timer_set().once(key, delay, message)

    def schedule_periodic(
        self, key: Hashable, interval: float, message: Any, initial_delay: float | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        check_message(message)
        self._timer_set().periodic(key, interval, message, initial_delay)

    def cancel_timer(self, key: Hashable) -> bool:
        return self._timers.cancel(key) if self._timers is not None else False

    def _timer_set(self) -> Timers:
        if self._timers is None:
            self._timers = Timers(self._loop, self._enqueue)
        return self._timers

    # ------------------------------------------------------------------ introspection

    @property
    def status(self) -> str:
        return str(self._status)

    @property
    def mailbox_depth(self) -> int:
        return len(self._mailbox) if self._mailbox else 0

    # ------------------------------------------------------------------ delivery (hot path)

    def _enqueue(self, item: Any) -> None:
        if self._status >= _STOPPING:
            refuse(self.system.dead_letters, self.path, item, "stopped")
            return
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        elif self._capacity is not None and len(mailbox) >= self._capacity:
            overflow(self.system.dead_letters, self.path, item, self._capacity, self._drop_overflow)
            return
        mailbox.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self._task is None and self._status is _RUNNING:
            self._task = self._loop.create_task(self._run(False), name=self.path)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _start_task(self, start: bool) -> None:
        self._task = self._loop.create_task(self._run(start), name=self.path)

    async def _run(self, start: bool) -> None:
        """The actor's task: ``started`` if asked, then messages until stopped or suspended."""
        try:
            if start:
                try:
                    await self.actor.started()
                except Exception as exc:
                    if not failed(self, exc):
                        return
            await self._process()
        finally:
            if self._task is asyncio.current_task():
                self._task = None
                self._waiter = None
                # Ended by a failure or an escalation while a stop is pending, or resumed with
                # mail waiting: another task carries on, so nothing is left half-done.
                status = self._status
                if (self._stop is not None and status < _STOPPED and status is not _RESTARTING) or (
                    status is _RUNNING and self._mailbox
                ):
                    self._start_task(False)

    async def _process(self) -> None:
        """The message loop: each turn either finishes a pending stop, handles one message,
        ends the task (suspended or restarting) or parks until the mailbox has mail.

        The common step (a tell or a live ask, handled without error) stays inline: it runs
        once per message, and a method call there costs ping-pong throughput. The rare steps
        (a stop, an expired ask, a failure) are methods of their own.
        """
        loop = self._loop
        throughput = self.system._throughput
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        actor = self.actor
        handled = 0
        while True:
            if self._stop is not None and self._stop_due(self._stop, mailbox):
                if not self._children:
                    await self._finish_stop(self._stop.reason)
                    return
            elif mailbox and self._status is _RUNNING:
                item = mailbox.popleft()
                future: asyncio.Future[Any] | None
                if type(item) is _Ask:
                    if item.future.done():  # timed out or cancelled while queued: too late
                        self.system.dead_letters.publish(self.path, item.message, "expired")
                        continue
                    future = self._current = item.future
                    message = item.message
                else:
                    future = None
                    message = item
                try:
                    result = await actor.receive(message)
                except Exception as exc:
                    if not self._receive_failed(future, exc):
                        return
                    continue
                except asyncio.CancelledError as exc:
                    if self._interrupted(future):
                        raise
                    if not failed(self, _cancelled_by_receive(self.path, exc)):
                        return
                    continue
                self._current = None
                self.processed += 1
                if future is not None and not future.done():
                    future.set_result(result)
                handled += 1
                if handled >= throughput:
                    handled = 0
                    if mailbox:
                        await asyncio.sleep(0)  # let the other actors run
                continue
            elif self._status is not _RUNNING:
                return
            waiter = self._waiter = loop.create_future()
            await waiter

    def _stop_due(self, stop: _StopRequest, mailbox: deque[Any]) -> bool:
        """Whether the pending stop applies now: at once, or once a drain has emptied the
        mailbox (or the actor can no longer handle it). A hard stop refuses new mail at once."""
        if stop.drain and mailbox and self._status is _RUNNING:
            return False
        if not stop.drain:
            self._status = _STOPPING
        return True

    def _receive_failed(self, future: asyncio.Future[Any] | None, error: Exception) -> bool:
        """``receive`` raised: the asker gets the error, the supervisor decides. True if the
        actor goes on with its next message (resumed)."""
        self._current = None
        self.processed += 1
        if future is not None and not future.done():
            future.set_exception(error)
        return failed(self, error)

    def _interrupted(self, future: asyncio.Future[Any] | None) -> bool:
        """``receive`` raised CancelledError: the asker is told it was interrupted. True if this
        task was really cancelled (the caller re-raises); False if ``receive`` raised it on its
        own, which is a failure like any other."""
        self._current = None
        if future is not None and not future.done():
            future.set_exception(ActorInterrupted(f"{self.path} was interrupted"))
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    def _instantiate(self) -> Actor[Any]:
        factory, args, kwargs = self._factory
        token = _constructing.set(self)
        try:
            actor = factory(*args, **kwargs)
        finally:
            _constructing.reset(token)
        if not isinstance(actor, Actor):
            raise TypeError(f"actor factory for {self.path} returned {type(actor).__name__}")
        return actor

    async def _cancel_task(self) -> None:
        task = self._task
        self._task = None
        self._waiter = None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])

    # ------------------------------------------------------------------ stopping

    def request_stop(self, reason: str, drain: bool) -> None:
        """Stop after the current message (or, with ``drain``, once the mailbox is empty);
        the children are asked first and the actor stops only when they are gone."""
        if self._status >= _STOPPING:
            return
        current = self._stop
        if current is not None and (not current.drain or drain):
            return
        self._stop = _StopRequest(reason, drain)
        if self._children:
            for child in reversed(list(self._children.values())):
                child.request_stop(reason, drain)
        if self._status is _RESTARTING:
            return  # the restart in progress finishes the stop
        if self._task is None or self._task.done():
            self._start_task(False)
        else:
            self._wake()

    async def _finish_stop(self, reason: str) -> None:
        self._status = _STOPPING
        self._cancel_timers()
        try:
            await self.actor.stopping()
        except Exception as exc:
            _log.error("actor.hook_failed", actor=self.path, hook="stopping", exc_info=exc)
        self._finalize(reason)

    def _finalize(self, reason: str) -> None:
        """Mark stopped; leftovers to dead letters; tell watchers and the parent."""
        self._status = _STOPPED
        self._cancel_timers()
        current = self._current
        if current is not None and not current.done():
            current.set_exception(ActorStopped(f"{self.path} stopped before replying"))
        mailbox = self._mailbox
        while mailbox:
            refuse(self.system.dead_letters, self.path, mailbox.popleft(), reason)
        self._unwatch_all()
        if self._watchers:
            for watcher in self._watchers:
                watcher._enqueue(Terminated(actor=self.ref, reason=reason))
            self._watchers = None
        parent = self.parent_cell
        if parent is not None and parent._children and parent._children.get(self.name) is self:
            del parent._children[self.name]
            parent._wake()
        if self._stop_waiters:
            for waiter in self._stop_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._stop_waiters = None

    def force_stop(self, reason: str, tasks: list[asyncio.Task[Any]]) -> None:
        """Stop this subtree now, without waiting: used when a shutdown deadline has passed."""
        if self._children:
            for child in reversed(list(self._children.values())):
                child.force_stop(reason, tasks)
        for task in [self._task, *(self._supervising or ())]:
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
                tasks.append(task)
        self._task = None
        self._waiter = None
        if self._status is not _STOPPED:
            if self._stop is None:
                self._stop = _StopRequest(reason, drain=False)
            self._finalize(reason)

    async def wait_stopped(self) -> None:
        """Return once this actor has stopped."""
        if self._status is _STOPPED:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self._stop_waiters is None:
            self._stop_waiters = []
        self._stop_waiters.append(waiter)
        await waiter

    # ------------------------------------------------------------------ timers and watches

    def _cancel_timers(self) -> None:
        if self._timers is not None:
            self._timers.cancel_all()
            self._timers = None

    def watch_cell(self, target: ActorCell) -> None:
        """Death watch of a local actor (what a LocalActorRef's watch comes down to)."""
        if target._status is _STOPPED:
            reason = target._stop.reason if target._stop else "stopped"
            self._enqueue(Terminated(actor=target.ref, reason=reason))
            return
        if target._watchers is None:
            target._watchers = set()
        target._watchers.add(self)
        if self._watching is None:
            self._watching = set()
        self._watching.add(target)

    def unwatch_cell(self, target: ActorCell) -> None:
        if target._watchers:
            target._watchers.discard(self)
        if self._watching:
            self._watching.discard(target)

    def _unwatch_all(self) -> None:
        if self._watching:
            for target in self._watching:
                if target._watchers:
                    target._watchers.discard(self)
            self._watching = None

    # ------------------------------------------------------------------ for supervision, system

    def spawn_cell(
        self,
        factory: ActorFactory,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        mailbox: Mailbox | None,
    ) -> ActorCell:
        """A new child cell (see ActorContext.spawn)."""
        if self._status >= _STOPPING or self._stop is not None:
            raise ActorStopped(f"{self.path} is stopping and cannot spawn children")
        children = self._children
        if children is None:
            children = self._children = {}
        if name is None:
            self._name_seq += 1
            name = f"${self._name_seq}"
        elif not name or "/" in name or name.startswith("$"):
            raise ValueError(f"invalid actor name {name!r}: non-empty, no '/', no leading '$'")
        if name in children:
            raise ActorNameTaken(f"{self.path} already has a child named {name!r}")
        cell = ActorCell(self.system, self, name, (factory, args, kwargs), mailbox)
        children[name] = cell
        if type(cell.actor).started is not Actor.started:
            cell._start_task(True)
        return cell

    @property
    def leaving(self) -> bool:
        """Asked to stop, or stopping: no restarts and no new children."""
        return self._stop is not None or self._status >= _STOPPING

    def child_cell(self, name: str) -> ActorCell | None:
        return self._children.get(name) if self._children else None

    def child_cells(self) -> list[ActorCell]:
        """The live children, in start order (a copy)."""
        return list(self._children.values()) if self._children else []

    def suspend(self) -> None:
        """Failed: handle no message until the supervisor has decided."""
        self._status = _SUSPENDED

    def interrupt(self) -> None:
        """Suspend and cancel the message in hand (a child's failure escalated to this actor)."""
        task = self._task
        self._status = _SUSPENDED
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def resume(self) -> None:
        """Run again after a suspension; a task picks up mail that waited."""
        self._status = _RUNNING
        if self._mailbox and (self._task is None or self._task.done()):
            self._start_task(False)

    def restart_times(self) -> deque[float]:
        """When this actor was restarted lately (supervision's intensity window)."""
        if self._restart_times is None:
            self._restart_times = deque()
        return self._restart_times

    def run_supervision(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` (a group restart) in a supervision task of this actor, cancelled if
        the subtree is cut short at shutdown."""
        task = self._loop.create_task(coro)
        if self._supervising is None:
            self._supervising = set()
        self._supervising.add(task)
        task.add_done_callback(self._supervising.discard)

    async def clear_for_restart(self) -> None:
        """First half of a restart: interrupt, drop timers and watches, stop the children."""
        self._status = _RESTARTING
        await self._cancel_task()
        self._cancel_timers()
        self._unwatch_all()
        if self._children:
            for child in reversed(list(self._children.values())):
                child.request_stop("stopped", drain=False)
            await asyncio.gather(*(c.wait_stopped() for c in list(self._children.values())))

    def renew(self) -> None:
        """Second half of a restart: a fresh instance, then ``started`` and the kept mailbox;
        or stopped, if a stop came meanwhile or the constructor fails."""
        if self._stop is not None:  # asked to stop while restarting
            self._status = _STOPPING
            self._finalize(self._stop.reason)
            return
        try:
            self.actor = self._instantiate()
        except Exception as exc:
            self.last_failure = describe(exc)
            _log.error("actor.restart_failed", actor=self.path, exc_info=exc)
            self._stop = _StopRequest(f"failed: {describe(exc)}", drain=False)
            self._status = _STOPPING
            self._finalize(self._stop.reason)
            return
        self.restarts += 1
        self._status = _RUNNING
        _log.info("actor.restarted", actor=self.path, restarts=self.restarts)
        start = type(self.actor).started is not Actor.started
        if start or self._mailbox:
            self._start_task(start)


def _cancelled_by_receive(path: str, cause: asyncio.CancelledError) -> ActorError:
    error = ActorError(f"receive of {path} raised CancelledError")
    error.__cause__ = cause
    return error
