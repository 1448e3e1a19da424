"""The messaging core of a cluster node: envelopes out, envelopes in, asks.

Inbound commands are handed straight to the target actor's mailbox as ``_Ask`` items (no task
per message): their future (an _inbound.Completion) resolves once the actor has handled the message,
which is when a tell is journaled as handled, an ask answered, and — once every item of a
batch is handled — the batch acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cloudcore.cluster._failures import failure_of, rebuild
from cloudcore.cluster._inbound import Batch, Completion, expire
from cloudcore.cluster._protocol import Heartbeat
from cloudcore.cluster._watches import RemoteWatches
from cloudcore.cluster.dedup import DedupWindow
from cloudcore.cluster.registry import MessageRegistry
from cloudcore.cluster.remote_ref import RemoteActorRef
from cloudcore.cluster.wire import (
    ASK,
    CONTROL,
    FAILURE,
    REPLY,
    TELL,
    Codec,
    Envelope,
    Failure,
    WireError,
)
from cloudcore.errors import (
    AskTimeout,
    NodeDown,
    NotFound,
    TransportUnavailable,
)
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorRef, ActorSystem
from cloudcore.runtime.ref import _Ask
from cloudcore.transport import Delivery, Transport
from cloudcore.transport.base import Item

if TYPE_CHECKING:
    from cloudcore.cluster.membership import Membership
    from cloudcore.runtime import ActorCell

__all__ = ["ASK_BARRIER_WAIT", "Remoting"]

#: How long an ask waits at the receiver for the tell its sender sent before it (seconds).
ASK_BARRIER_WAIT = 1.0

_log = get_logger("cloudcore.cluster")


class Remoting:
    """One node's sending and receiving; the transport's InboundHandler."""

    def __init__(
        self,
        system: ActorSystem,
        transport: Transport,
        registry: MessageRegistry,
        dedup: DedupWindow,
    ) -> None:
        self.system = system
        self.node = system.node_id
        self.incarnation = random.getrandbits(62)
        self.transport = transport
        self.registry = registry
        self.codec = Codec(registry, self.resolve_ref)
        self.dedup = dedup
        self.membership: Membership | None = None
        self.closing = False
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], str]] = {}
        self._cells: dict[str, ActorCell] = {}
        self.watches = RemoteWatches(self)
        # Ask ordering behind tells (see wire.py, ``after``).
        self._last_tell: dict[str, int] = {}
        self._tells_seen: dict[int, int] = {}
        self._parked: dict[tuple[int, int], list[tuple[Envelope, Any]]] = {}

    # ------------------------------------------------------------------ refs

    def resolve_ref(self, node: str, path: str) -> ActorRef[Any]:
        """The ref for an actor named on the wire: local if it lives here, remote otherwise."""
        if node == self.node:
            try:
                return self.system.lookup(path)
            except NotFound:
                pass  # stopped already: a remote ref to ourselves reaches dead letters
        return RemoteActorRef(self, node, path)

    # ------------------------------------------------------------------ sending

    def _encode(
        self, kind: int, target: str, message: Any, corr: int = 0, deadline: float = 0.0
    ) -> tuple[int, bytes]:
        msg_id = next(self._ids)
        tag = self.registry.tag_of(message)
        data = self.codec.encode(
            kind, self.node, self.incarnation, msg_id, target, message, tag, corr, deadline
        )
        return msg_id, data

    def tell(self, node: str, path: str, message: Any) -> None:
        """Persistent, at-least-once (duplicates dropped by the receiver), in order per sender
        while connected. Raises InvalidMessage or TypeError if the message cannot travel, and
        TransportUnavailable while too much waits for the broker (transport.max_unsent_bytes)."""
        msg_id, data = self._encode(TELL, path, message)
        # Sent first: a send refused (TransportUnavailable, back-pressure) must not leave asks
        # waiting behind a tell that never left.
        self.transport.send(node, data, persistent=True)
        self._last_tell[node] = msg_id

    async def ask(self, node: str, path: str, message: Any, timeout: float | None) -> Any:
        if timeout is None:
            timeout = self.system.ask_timeout
        if not self.transport.connected:
            raise TransportUnavailable(
                f"cannot ask {node}:{path}: no broker connection (reconnecting)"
            )
        membership = self.membership
        if membership is not None and membership.status(node) in ("down", "left"):
            raise NodeDown(f"cannot ask {node}:{path}: node {node} is down")
        deadline = time.time() + timeout
        msg_id = next(self._ids)
        data = self.codec.encode(
            ASK,
            self.node,
            self.incarnation,
            msg_id,
            path,
            message,
            self.registry.tag_of(message),
            msg_id,
            deadline,
            self._last_tell.get(node, 0),
        )
        future = self._loop.create_future()
        self._pending[msg_id] = (future, node)
        self.transport.send_control(node, data, expires_at=deadline)
        timer = self._loop.call_later(timeout, _timeout, future, node, path, message, timeout)
        try:
            return await future
        finally:
            timer.cancel()
            self._pending.pop(msg_id, None)

    def _reply(self, env: Envelope, result: Any, error: BaseException | None) -> None:
        deadline = env.deadline or None
        try:
            if error is None:
                tag = self.registry.tag_of(result) if _is_message(result) else ""
                data = self.codec.encode(
                    REPLY, self.node, self.incarnation, 0, "", result, tag, env.corr
                )
            else:
                raise error
        except Exception as exc:  # the handler's error, or a result that cannot travel
            failure = failure_of(exc)
            data = self.codec.encode(
                FAILURE, self.node, self.incarnation, 0, "", failure, "cloudcore.Failure", env.corr
            )
        self.transport.send_control(env.sender, data, expires_at=deadline)

    def broadcast_heartbeat(self, beat: Heartbeat, ttl: float) -> None:
        _, data = self._encode(CONTROL, "", beat)
        self.transport.broadcast(data, ttl=ttl)

    # ------------------------------------------------------------------ receiving

    def on_commands(self, items: Sequence[Item], delivery: Delivery) -> None:
        if self.closing:
            return  # not acknowledged: the broker gives it to this node's next incarnation
        batch = Batch(delivery)
        refused: list[bytes] = []
        reasons: list[str] = []
        for raw in items:
            try:
                env = self.codec.envelope(raw)
            except WireError as exc:
                refused.append(bytes(raw))
                reasons.append(str(exc))
                continue
            if not self.dedup.add((env.inc, env.id)):
                continue
            try:
                message = self.codec.payload(env)
            except WireError as exc:
                refused.append(bytes(raw))
                reasons.append(str(exc))
                if env.kind == ASK:
                    self._reply(env, None, exc)
                elif env.kind == TELL:
                    self._tell_arrived(env)
                continue
            if env.kind == TELL or env.kind == ASK:
                if not self._deliver(env, message, batch):
                    refused.append(bytes(raw))
                    reasons.append(f"no actor at {env.target}")
                if env.kind == TELL:
                    self._tell_arrived(env)
            else:
                refused.append(bytes(raw))
                reasons.append(f"envelope kind {env.kind} in a command inbox")
        if refused:
            _log.error(
                "cluster.messages_refused",
                node=self.node,
                count=len(refused),
                reasons=sorted(set(reasons)),
            )
            delivery.dead_letter(refused, "; ".join(sorted(set(reasons))))
        batch.seal()

    def _deliver(self, env: Envelope, message: Any, batch: Batch | None) -> bool:
        """Hand the message to its actor; False if there is no such actor."""
        cell = self._cell(env.target)
        if cell is None:
            self.system.dead_letters.publish(env.target, message, "no such actor")
            if env.kind == ASK:
                self._reply(env, None, NotFound(f"no actor at {env.target} on {self.node}"))
            return False
        completion = Completion(self, batch, env)
        if env.deadline:
            left = env.deadline - time.time()
            if left <= 0:
                self.system.dead_letters.publish(env.target, message, "expired")
                return True
            completion.timer = self._loop.call_later(left, expire, completion)
        if batch is not None:
            batch.pending += 1
        cell._enqueue(_Ask(message, completion))
        return True

    def _tell_arrived(self, env: Envelope) -> None:
        seen = self._tells_seen
        if env.id > seen.get(env.inc, 0):
            seen[env.inc] = env.id
        if self._parked:
            for ask, message in self._parked.pop((env.inc, env.id), ()):
                self._deliver(ask, message, None)

    def _on_ask(self, env: Envelope, message: Any) -> None:
        after = env.after
        if (
            after
            and self._tells_seen.get(env.inc, 0) < after
            and (env.inc, after) not in self.dedup
        ):
            # The tell sent before this ask is still on its way: wait for it, but not for
            # ever — it may never come (dead-lettered as poison, or lost with a sender that
            # died before the broker confirmed it).
            key = (env.inc, after)
            self._parked.setdefault(key, []).append((env, message))
            self._loop.call_later(ASK_BARRIER_WAIT, self._unpark, key, env, message)
            return
        self._deliver(env, message, None)

    def _unpark(self, key: tuple[int, int], env: Envelope, message: Any) -> None:
        parked = self._parked.get(key)
        if parked and any(e is env for e, _ in parked):
            parked[:] = [(e, m) for e, m in parked if e is not env]
            if not parked:
                del self._parked[key]
            _log.debug("cluster.ask_unparked", node=self.node, sender=env.sender, after=key[1])
            self._deliver(env, message, None)

    def _cell(self, path: str) -> ActorCell | None:
        cell = self._cells.get(path)
        if cell is None or cell.status == "stopped":
            try:
                cell = self.system._cell_at(path)
            except NotFound:
                self._cells.pop(path, None)
                return None
            self._cells[path] = cell
        return cell

    def on_control(self, items: Sequence[Item]) -> None:
        for raw in items:
            env = None
            try:
                env = self.codec.envelope(raw)
                payload = self.codec.payload(env)
            except WireError as exc:
                _log.error("cluster.control_refused", node=self.node, error=str(exc))
                if env is not None and env.kind == ASK:
                    self._reply(env, None, exc)
                continue
            kind = env.kind
            if kind == ASK:
                if self.dedup.add((env.inc, env.id)):
                    self._on_ask(env, payload)
            elif kind in (REPLY, FAILURE):
                entry = self._pending.get(env.corr)
                if entry is None or entry[0].done():
                    continue  # late: the asker gave up
                if kind == REPLY:
                    entry[0].set_result(payload)
                elif isinstance(payload, Failure):
                    entry[0].set_exception(rebuild(payload))
            elif kind == CONTROL and isinstance(payload, Heartbeat) and self.membership:
                self.membership.heard(payload)

    def on_connection(self, connected: bool) -> None:
        if not connected:
            error = "the broker connection was lost; the node is reconnecting"
            for future, node in list(self._pending.values()):
                if not future.done():
                    future.set_exception(TransportUnavailable(f"ask to {node}: {error}"))
        if self.membership is not None:
            self.membership.connection(connected)

    def node_down(self, node: str, reason: str) -> None:
        """``node`` is down or left: its asks fail, its watched actors are Terminated."""
        for future, target in list(self._pending.values()):
            if target == node and not future.done():
                future.set_exception(NodeDown(f"node {node} is down ({reason})"))
        self.watches.node_down(node, reason)

    def _node_gone(self, node: str) -> bool:
        membership = self.membership
        return membership is not None and membership.status(node) in ("down", "left")


def _is_message(value: Any) -> bool:
    config = getattr(type(value), "__struct_config__", None)
    return config is not None and config.tag is not None


def _timeout(
    future: asyncio.Future[Any], node: str, path: str, message: Any, timeout: float
) -> None:
    if not future.done():
        future.set_exception(
            AskTimeout(
                f"no reply from {node}:{path} to {type(message).__name__} within {timeout:g} s"
            )
        )
