"""The in-process transport: nodes in one process (one event loop) joined through a hub.

It keeps the semantics that matter to the cluster — per-node inboxes that outlive their node,
batches per loop tick, order per sender — without a broker, so embedded use and tests of the
cluster logic need no server. Nothing is persisted; acknowledgements are accepted and ignored.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from cloudcore.errors import TransportUnavailable
from cloudcore.logging import get_logger
from cloudcore.transport.base import InboundHandler, Item, Transport

__all__ = ["LocalHub", "LocalTransport"]

_log = get_logger("cloudcore.transport")


class _LocalDelivery:
    __slots__ = ()

    @property
    def redelivered(self) -> bool:
        return False

    def ack(self) -> None:
        pass

    def dead_letter(self, items: Sequence[bytes], reason: str) -> None:
        _log.error("transport.dead_lettered", count=len(items), reason=reason)


_DELIVERY = _LocalDelivery()


class LocalHub:
    """The in-process "broker": command inboxes by node id, kept while their node is away."""

    def __init__(self) -> None:
        self._handlers: dict[str, InboundHandler] = {}
        self._waiting: defaultdict[str, list[Item]] = defaultdict(list)

    def _attach(self, node: str, handler: InboundHandler) -> None:
        self._handlers[node] = handler
        waiting = self._waiting.pop(node, None)
        if waiting:
            handler.on_commands(waiting, _DELIVERY)

    def _detach(self, node: str) -> None:
        self._handlers.pop(node, None)

    def _commands(self, node: str, items: list[Item]) -> None:
        handler = self._handlers.get(node)
        if handler is None:
            self._waiting[node].extend(items)
        else:
            handler.on_commands(items, _DELIVERY)

    def _control(self, node: str | None, items: list[Item]) -> None:
        if node is None:
            for handler in list(self._handlers.values()):
                handler.on_control(items)
        else:
            target = self._handlers.get(node)
            if target is not None:
                target.on_control(items)


class LocalTransport(Transport):
    """A node's side of a :class:`LocalHub`. Batches what is sent in one loop tick."""

    def __init__(self, hub: LocalHub) -> None:
        self._hub = hub
        self._node: str | None = None
        self._commands: dict[str, list[Item]] = {}
        self._controls: dict[str | None, list[Item]] = {}
        self._scheduled = False

    async def start(self, node_id: str, handler: InboundHandler) -> None:
        if node_id in self._hub._handlers:
            raise TransportUnavailable(f"node {node_id} is already attached to this hub")
        self._node = node_id
        self._hub._attach(node_id, handler)
        handler.on_connection(True)

    @property
    def connected(self) -> bool:
        return self._node is not None

    def send(
        self, node: str, item: bytes, *, persistent: bool, expires_at: float | None = None
    ) -> None:
        self._commands.setdefault(node, []).append(item)
        self._schedule()

    def send_control(self, node: str, item: bytes, *, expires_at: float | None = None) -> None:
        self._controls.setdefault(node, []).append(item)
        self._schedule()

    def broadcast(self, item: bytes, *, ttl: float) -> None:
        self._controls.setdefault(None, []).append(item)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        commands, self._commands = self._commands, {}
        controls, self._controls = self._controls, {}
        for node, items in commands.items():
            self._hub._commands(node, items)
        for target, items in controls.items():
            self._hub._control(target, items)

    async def close(self) -> None:
        if self._node is not None:
            self._flush()
            self._hub._detach(self._node)
            self._node = None
