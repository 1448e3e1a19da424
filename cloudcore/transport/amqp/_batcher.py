"""Coalescing: what is queued for one destination in one loop tick leaves as one AMQP message.

The broker's cost is per message, not per byte, so a Python publisher that sends one AMQP
message per actor message is capped at a few thousand per second. A batch is closed by the end
of the loop tick (or ``max_delay`` after its first item), by ``max_count`` items or by
``max_bytes``, whichever comes first; its body is a msgpack array of the encoded envelopes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["Batch", "Batcher", "frame"]


class Batch:
    """Envelopes for one exchange and routing key, in the order they were sent. The batch is
    persistent (and never expires) as soon as one item is."""

    __slots__ = ("exchange", "expires_at", "headers", "items", "persistent", "routing_key", "size")

    def __init__(self, exchange: str, routing_key: str, persistent: bool) -> None:
        self.headers: dict[str, str] | None = None
        self.exchange = exchange
        self.routing_key = routing_key
        self.persistent = persistent
        self.items: list[bytes] = []
        self.size = 0
        # The batch lives as long as its longest-lived item; None once any item never expires.
        self.expires_at: float | None = 0.0

    def add(self, item: bytes, expires_at: float | None, persistent: bool = False) -> None:
        self.items.append(item)
        if persistent:
            self.persistent = True
        self.size += len(item)
        if expires_at is None or self.expires_at is None:
            self.expires_at = None
        elif expires_at > self.expires_at:
            self.expires_at = expires_at

    def body(self) -> bytes:
        return frame(self.items)


def frame(items: list[bytes]) -> bytes:
    """A msgpack array of already encoded items, without re-encoding them."""
    n = len(items)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 0x10000:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


class Batcher:
    """Open batches by destination; closed ones wait in :attr:`ready` for the publisher."""

    def __init__(
        self,
        *,
        max_bytes: int,
        max_count: int,
        max_delay: float,
        on_ready: Callable[[], None],
    ) -> None:
        self._max_bytes = max_bytes
        self._max_count = max_count
        self._max_delay = max_delay
        self._on_ready = on_ready
        self._open: dict[tuple[str, str], Batch] = {}
        self._armed = False
        self.ready: deque[Batch] = deque()

    def add(
        self,
        exchange: str,
        routing_key: str,
        item: bytes,
        *,
        persistent: bool,
        expires_at: float | None,
    ) -> None:
        # One batch per destination, whatever the persistence: a transient item sent after a
        # persistent one must not overtake it.
        key = (exchange, routing_key)
        batch = self._open.get(key)
        if batch is not None and batch.items and batch.size + len(item) > self._max_bytes:
            self._close(key, batch)
            batch = None
        if batch is None:
            batch = self._open[key] = Batch(exchange, routing_key, persistent)
            self._arm()
        batch.add(item, None if persistent else expires_at, persistent)
        if len(batch.items) >= self._max_count or batch.size >= self._max_bytes:
            self._close(key, batch)

    def _close(self, key: tuple[str, str], batch: Batch) -> None:
        del self._open[key]
        self.ready.append(batch)
        self._on_ready()

    def _arm(self) -> None:
        if self._armed:
            return
        self._armed = True
        loop = asyncio.get_running_loop()
        if self._max_delay > 0:
            loop.call_later(self._max_delay, self.flush)
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Close every open batch now."""
        self._armed = False
        if self._open:
            self.ready.extend(self._open.values())
            self._open.clear()
            self._on_ready()
