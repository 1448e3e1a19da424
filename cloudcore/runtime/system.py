"""The actor system: one per node. It holds the tree, dead letters and runtime settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from cloudcore.config import RuntimeSettings
from cloudcore.errors import ActorError, Conflict, NotFound
from cloudcore.logging import get_logger
from cloudcore.runtime._supervising import halt
from cloudcore.runtime.actor import Actor
from cloudcore.runtime.cell import ActorCell, ActorFactory
from cloudcore.runtime.deadletters import DeadLetters
from cloudcore.runtime.introspection import ActorInfo, snapshot
from cloudcore.runtime.mailbox import Mailbox
from cloudcore.runtime.ref import ActorRef
from cloudcore.runtime.supervision import SupervisorStrategy

__all__ = ["ActorSystem"]

C = TypeVar("C")

_log = get_logger("cloudcore.runtime")


class _Guardian(Actor[NoReturn]):
    """The actors at ``/``, ``/user`` and ``/system``: they only supervise (``Actor[NoReturn]``:
    no message is theirs, which the system endpoints read to refuse one before delivery)."""

    async def receive(self, message: Any) -> NoReturn:
        raise ActorError(f"{self.context.path} takes no messages, got {type(message).__name__}")


class ActorSystem:
    """A tree of actors on one asyncio loop::

        /            the root guardian
        /user        actors spawned with ActorSystem.spawn, and their children
        /system      the runtime's own actors

    Create it inside a running loop. ``async with ActorSystem() as system:`` shuts it down on
    exit. ``user_strategy`` supervises the top-level actors; escalations past it stop the actor.
    """

    def __init__(
        self,
        node_id: str = "node-1",
        settings: RuntimeSettings | None = None,
        *,
        user_strategy: SupervisorStrategy | None = None,
    ) -> None:
        self.node_id = node_id
        self.settings = settings or RuntimeSettings()
        self.ask_timeout = self.settings.ask_timeout
        self._throughput = self.settings.throughput
        self._loop = asyncio.get_running_loop()
        self.dead_letters = DeadLetters(self.settings.dead_letter_history)
        self._root = ActorCell(self, None, "", (_Guardian, (), {}), None)
        guardian: type[_Guardian] = _Guardian
        if user_strategy is not None:
            # the same guardian, with another strategy: shown under its name, as any other
            guardian = type(
                _Guardian.__name__, (_Guardian,), {"supervisor_strategy": user_strategy}
            )
        self._user = self._root_child(guardian, "user")
        self._system = self._root_child(_Guardian, "system")
        self._shutdown: asyncio.Task[None] | None = None

    def _root_child(self, factory: ActorFactory, name: str) -> ActorCell:
        return self._root.spawn_cell(factory, (), {}, name, None)

    async def __aenter__(self) -> ActorSystem:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def spawn(
        self,
        factory: Callable[..., Actor[C]],
        /,
        *args: Any,
        name: str | None = None,
        mailbox: Mailbox | None = None,
        **kwargs: Any,
    ) -> ActorRef[C]:
        """Spawn a top-level actor under ``/user``; see ActorContext.spawn."""
        return self._user.spawn(factory, *args, name=name, mailbox=mailbox, **kwargs)

    def spawn_system(
        self, factory: Callable[..., Actor[C]], /, *args: Any, name: str, **kwargs: Any
    ) -> ActorRef[C]:
        """Spawn a runtime actor under ``/system``."""
        return self._system.spawn(factory, *args, name=name, **kwargs)

    def spawn_under(
        self,
        parent: str,
        factory: Callable[..., Actor[C]],
        /,
        *args: Any,
        name: str | None = None,
        mailbox: Mailbox | None = None,
        **kwargs: Any,
    ) -> ActorRef[C]:
        """Spawn a child of the actor at path ``parent``, from outside it (the orchestrator
        adds a datacenter to the tree it built); the parent supervises it as any child. The
        same as the parent's ``context.spawn``, and safe from another task because a spawn
        does not await. NotFound (no actor there), ActorStopped (it is stopping)."""
        return self._cell_at(parent).spawn(factory, *args, name=name, mailbox=mailbox, **kwargs)

    def lookup(self, path: str) -> ActorRef[Any]:
        """The ref of the actor at ``path`` (``/user/dc/dc1``); NotFound if none lives there."""
        return self._cell_at(path).ref

    def actor_class(self, path: str) -> type[Actor[Any]]:
        """The class of the actor at ``path`` (its ``Actor[M]`` says what it receives);
        NotFound if none lives there."""
        return type(self._cell_at(path).actor)

    def stop(self, path: str) -> None:
        """Ask the actor at ``path`` to stop after the message it is handling (its children
        first); NotFound if none lives there. ``await lookup(path).stopped()`` to wait."""
        self._cell_at(path).request_stop("stopped", drain=False)

    def tree(self, path: str = "/") -> ActorInfo:
        """A snapshot of the subtree at ``path``: class, status, mailbox depth, processed
        count, restarts and last failure of every actor."""
        return snapshot(self._cell_at(path))

    async def restart(self, path: str, timeout: float | None = None) -> None:
        """Restart one actor as its supervisor would, for an operator: the message in hand is
        interrupted (its asker gets ActorInterrupted), its children stop, a fresh instance
        starts and keeps the mailbox. Returns once it runs again. NotFound (no such actor),
        Conflict (it is stopping or restarting), ActorError (not running again in time)."""
        cell = self._cell_at(path)
        parent = cell.parent_cell
        if parent is None or cell.leaving or cell.status != "running":
            raise Conflict(f"{cell.path} is {cell.status}; only a running actor can be restarted")
        done = self._loop.create_future()
        error = ActorError(f"{cell.path} restarted by an operator")

        async def run() -> None:
            # The two halves of a supervisor's restart, for this actor alone (not its group),
            # in a supervision task of the parent, as supervision itself runs them.
            try:
                await halt(cell, error)
                cell.renew()
            finally:
                if not done.done():
                    done.set_result(None)

        parent.run_supervision(run())
        wait = self.ask_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(done), wait)
        except TimeoutError:
            raise ActorError(f"{cell.path} did not restart within {wait:g} s") from None

    def _cell_at(self, path: str) -> ActorCell:
        """The cell at ``path``; for the runtime and the cluster layer only."""
        if not path.startswith("/"):
            raise NotFound(f"actor path must be absolute, got {path!r}")
        cell = self._root
        for name in path.strip("/").split("/") if path.strip("/") else ():
            child = cell.child_cell(name)
            if child is None:
                raise NotFound(f"no actor at {path}")
            cell = child
        return cell

    @property
    def is_terminated(self) -> bool:
        return self._root.status == "stopped"

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop every actor, children before parents, each after handling what is already in
        its mailbox. What is not done within ``timeout`` (default: the runtime's
        shutdown_timeout) is cut short: messages still queued go to dead letters."""
        if self._shutdown is None:
            self._shutdown = self._loop.create_task(self._stop_all(timeout))
        await asyncio.shield(self._shutdown)

    async def _stop_all(self, timeout: float | None) -> None:
        deadline = self.settings.shutdown_timeout if timeout is None else timeout
        root = self._root
        root.request_stop("shutdown", drain=True)
        try:
            await asyncio.wait_for(root.wait_stopped(), deadline)
        except TimeoutError:
            _log.warning("system.shutdown_timeout", node=self.node_id, timeout=deadline)
            cancelled: list[asyncio.Task[Any]] = []
            root.force_stop("shutdown", cancelled)
            if cancelled:
                await asyncio.wait(cancelled, timeout=1.0)
