"""The runtime side of one actor, which the actor sees as ``self.context``.

A cell owns the mailbox and runs the actor's messages one at a time in an asyncio task of its own
(so ``asyncio.timeout`` and context variables work inside ``receive``). The task is created on the
first message and parks on a future while the mailbox is empty; an actor that never receives a
message costs no task at all.

Lifecycle changes that touch several actors (restarting a group of siblings, stopping a subtree)
run in the parent's supervision task or in each actor's own task, never half inside a ``receive``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from cloudcore.errors import (
    ActorError,
    ActorInterrupted,
    ActorNameTaken,
    ActorStopped,
    MailboxFull,
    NotFound,
)
from cloudcore.logging import get_logger
from cloudcore.runtime._status import (
    RESTARTING as _RESTARTING,
)
from cloudcore.runtime._status import (
    RUNNING as _RUNNING,
)
from cloudcore.runtime._status import (
    STATUS_NAMES,
)
from cloudcore.runtime._status import (
    STOPPED as _STOPPED,
)
from cloudcore.runtime._status import (
    STOPPING as _STOPPING,
)
from cloudcore.runtime._status import (
    StopRequest as _StopRequest,
)
from cloudcore.runtime._supervising import failed
from cloudcore.runtime.actor import Actor, _constructing
from cloudcore.runtime.mailbox import Mailbox, Overflow
from cloudcore.runtime.message import check_message
from cloudcore.runtime.ref import ActorRef, LocalActorRef, _Ask
from cloudcore.runtime.signals import Terminated

if TYPE_CHECKING:
    from cloudcore.runtime.system import ActorSystem

__all__ = ["STATUS_NAMES", "ActorCell", "ActorContext"]

_log = get_logger("cloudcore.runtime")

ActorFactory = Callable[..., Actor[Any]]


class ActorCell:
    """One actor's mailbox, task, children, watches and timers; the actor's ``context``."""

    __slots__ = (
        "_capacity",
        "_children",
        "_current",
        "_drop_overflow",
        "_factory",
        "_loop",
        "_mailbox",
        "_name_seq",
        "_parent",
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
        self._parent = parent
        self.name = name
        if parent is None:
            self.path = "/"
        elif parent._parent is None:
            self.path = "/" + name
        else:
            self.path = parent.path + "/" + name
        self.ref: ActorRef = LocalActorRef(self)
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
        self._timers: dict[Hashable, asyncio.TimerHandle] | None = None
        self._restart_times: deque[float] | None = None
        self._stop_waiters: list[asyncio.Future[None]] | None = None
        self._supervising: set[asyncio.Task[None]] | None = None
        self._name_seq = 0
        self.processed = 0
        self.restarts = 0
        self.last_failure: str | None = None
        self.actor: Actor[Any] = self._instantiate()

    # ------------------------------------------------------------------ context API (public)

    @property
    def parent(self) -> ActorRef | None:
        """The parent's ref (None only for the root)."""
        return self._parent.ref if self._parent is not None else None

    @property
    def status(self) -> str:
        return STATUS_NAMES[self._status]

    @property
    def mailbox_depth(self) -> int:
        return len(self._mailbox) if self._mailbox else 0

    @property
    def children(self) -> list[ActorRef]:
        return [c.ref for c in self._children.values()] if self._children else []

    def child(self, name: str) -> ActorRef:
        """The ref of the child called ``name``; NotFound if there is none."""
        cell = self._children.get(name) if self._children else None
        if cell is None:
            raise NotFound(f"{self.path} has no child {name!r}")
        return cell.ref

    def spawn(
        self,
        factory: ActorFactory,
        /,
        *args: Any,
        name: str | None = None,
        mailbox: Mailbox | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Create a child actor from ``factory(*args, **kwargs)`` and return its ref at once.

        ``name`` must be unique among the children (ActorNameTaken otherwise) and may not contain
        ``/``; without one a unique ``$n`` name is made. ``started`` runs before any message.
        """
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
        return cell.ref

    def stop(self, ref: ActorRef) -> None:
        """Stop ``ref`` (usually a child) after the message it is handling."""
        ref.stop()

    def watch(self, ref: ActorRef) -> None:
        """Receive ``Terminated`` when ``ref`` stops (at once if it has stopped already)."""
        ref._add_watcher(self)

    def unwatch(self, ref: ActorRef) -> None:
        """Stop watching ``ref``; a ``Terminated`` already queued is still delivered."""
        ref._remove_watcher(self)

    def _watch_cell(self, target: ActorCell) -> None:
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

    def _unwatch_cell(self, target: ActorCell) -> None:
        if target._watchers:
            target._watchers.discard(self)
        if self._watching:
            self._watching.discard(target)

    def schedule_once(self, key: Hashable, delay: float, message: Any) -> None:
        """Send ``message`` to self after ``delay`` seconds; replaces a timer with the same key."""
        check_message(message)
        self._set_timer(key, self._loop.call_later(delay, self._fire_once, key, message))

    def schedule_periodic(
        self, key: Hashable, interval: float, message: Any, initial_delay: float | None = None
    ) -> None:
        """Send ``message`` to self every ``interval`` seconds (at a fixed rate, skipping ticks
        missed while the loop was busy); replaces a timer with the same key."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        check_message(message)
        first = self._loop.time() + (interval if initial_delay is None else initial_delay)
        handle = self._loop.call_at(first, self._fire_periodic, key, interval, message, first)
        self._set_timer(key, handle)

    def cancel_timer(self, key: Hashable) -> bool:
        """Cancel the timer ``key``; False if there was none."""
        handle = self._timers.pop(key, None) if self._timers else None
        if handle is None:
            return False
        handle.cancel()
        return True

    # ------------------------------------------------------------------ delivery (hot path)

    def _enqueue(self, item: Any) -> None:
        if self._status >= _STOPPING:
            self._refuse(item, "stopped")
            return
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        elif self._capacity is not None and len(mailbox) >= self._capacity:
            self._overflow(item)
            return
        mailbox.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self._task is None and self._status is _RUNNING:
            self._task = self._loop.create_task(self._run(False), name=self.path)

    def _refuse(self, item: Any, reason: str) -> None:
        message = item.message if type(item) is _Ask else item
        self.system.dead_letters.publish(self.path, message, reason)
        if type(item) is _Ask and not item.future.done():
            item.future.set_exception(ActorStopped(f"{self.path} is stopped ({reason})"))

    def _overflow(self, item: Any) -> None:
        message = item.message if type(item) is _Ask else item
        error = MailboxFull(f"mailbox of {self.path} is full ({self._capacity} messages)")
        if self._drop_overflow:
            self.system.dead_letters.publish(self.path, message, "mailbox full")
            if type(item) is _Ask:
                item.future.set_exception(error)
        elif type(item) is _Ask:
            item.future.set_exception(error)
        else:
            raise error

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
        loop = self._loop
        throughput = self.system._throughput
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        actor = self.actor
        handled = 0
        while True:
            stop = self._stop
            if stop is not None and not (stop.drain and mailbox and self._status is _RUNNING):
                if not stop.drain:
                    self._status = _STOPPING
                if not self._children:
                    await self._finish_stop(stop.reason)
                    return
            elif mailbox and self._status is _RUNNING:
                item = mailbox.popleft()
                if type(item) is _Ask:
                    future = item.future
                    if future.done():  # timed out or cancelled while queued: too late to act
                        self.system.dead_letters.publish(self.path, item.message, "expired")
                        continue
                    self._current = future
                    message = item.message
                else:
                    future = None
                    message = item
                try:
                    result = await actor.receive(message)
                except Exception as exc:
                    self._current = None
                    self.processed += 1
                    if future is not None and not future.done():
                        future.set_exception(exc)
                    if not failed(self, exc):
                        return
                    continue
                except asyncio.CancelledError as exc:
                    self._current = None
                    if future is not None and not future.done():
                        future.set_exception(ActorInterrupted(f"{self.path} was interrupted"))
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    # receive raised CancelledError though nobody cancelled the actor
                    error = ActorError(f"receive of {self.path} raised CancelledError")
                    error.__cause__ = exc
                    if not failed(self, error):
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

    def _request_stop(self, reason: str, drain: bool) -> None:
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
                child._request_stop(reason, drain)
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
            self._refuse(mailbox.popleft(), reason)
        self._unwatch_all()
        if self._watchers:
            for watcher in self._watchers:
                watcher._enqueue(Terminated(actor=self.ref, reason=reason))
            self._watchers = None
        parent = self._parent
        if parent is not None and parent._children and parent._children.get(self.name) is self:
            del parent._children[self.name]
            parent._wake()
        if self._stop_waiters:
            for waiter in self._stop_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._stop_waiters = None

    def _force_stop(self, reason: str, tasks: list[asyncio.Task[Any]]) -> None:
        """Stop this subtree now, without waiting: used when a shutdown deadline has passed."""
        if self._children:
            for child in reversed(list(self._children.values())):
                child._force_stop(reason, tasks)
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

    async def _wait_stopped(self) -> None:
        if self._status is _STOPPED:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self._stop_waiters is None:
            self._stop_waiters = []
        self._stop_waiters.append(waiter)
        await waiter

    # ------------------------------------------------------------------ timers and watches

    def _set_timer(self, key: Hashable, handle: asyncio.TimerHandle) -> None:
        if self._timers is None:
            self._timers = {}
        old = self._timers.get(key)
        if old is not None:
            old.cancel()
        self._timers[key] = handle

    def _fire_once(self, key: Hashable, message: Any) -> None:
        if self._timers:
            self._timers.pop(key, None)
        self._enqueue(message)

    def _fire_periodic(self, key: Hashable, interval: float, message: Any, when: float) -> None:
        self._enqueue(message)
        now = self._loop.time()
        when += interval
        if when <= now:
            when = now + interval
        if self._timers is not None and key in self._timers:
            self._timers[key] = self._loop.call_at(
                when, self._fire_periodic, key, interval, message, when
            )

    def _cancel_timers(self) -> None:
        if self._timers:
            for handle in self._timers.values():
                handle.cancel()
            self._timers = None

    def _unwatch_all(self) -> None:
        if self._watching:
            for target in self._watching:
                if target._watchers:
                    target._watchers.discard(self)
            self._watching = None


#: The type actors see as ``self.context``.
ActorContext = ActorCell
