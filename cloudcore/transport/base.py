"""The transport interface: node inboxes, per-node control inboxes and a broadcast.

Every node has two inboxes:

- its **command inbox** (``send``): durable, acknowledged. Items arrive in batches with a
  :class:`Delivery`; the node acknowledges a batch once every item in it has been handled, so a
  node that dies mid-work gets the batch again.
- its **control inbox** (``send_control``, ``broadcast``): transient and unacknowledged, for
  ask replies and membership heartbeats, which are worthless once late.

Items are opaque bytes (one encoded envelope each); a transport may carry several in one
physical message but always hands them to the receiver in the order they were sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import msgspec

__all__ = ["Delivery", "InboundHandler", "Item", "Transport"]

#: One encoded envelope as it arrives: bytes, or a zero-copy slice of a received batch.
Item = bytes | msgspec.Raw


class Delivery(Protocol):
    """One received batch of command items, to be settled exactly once."""

    @property
    def redelivered(self) -> bool:
        """True if the broker delivered this batch before (to this node or a predecessor)."""

    def ack(self) -> None:
        """The batch is handled: the transport forgets it. Idempotent."""

    def dead_letter(self, items: Sequence[bytes], reason: str) -> None:
        """Move ``items`` (some of this batch's) to the dead-letter store, with ``reason``.

        The rest of the batch is still acknowledged with :meth:`ack`.
        """


class InboundHandler(Protocol):
    """What a node gives its transport: called on the event loop, must not block."""

    def on_commands(self, items: Sequence[Item], delivery: Delivery) -> None:
        """A batch from the command inbox; settle ``delivery`` once all items are handled."""

    def on_control(self, items: Sequence[Item]) -> None:
        """Items from the control inbox (replies, heartbeats); nothing to settle."""

    def on_connection(self, connected: bool) -> None:
        """The transport lost (False) or regained (True) its connection."""


class Transport(ABC):
    """Moves encoded envelopes between nodes. One instance per node; not thread-safe.

    ``send``, ``send_control`` and ``broadcast`` return at once and never raise for a remote
    failure: they queue the item, and the transport batches what was queued for one node in the
    same loop tick into one physical message.
    """

    @abstractmethod
    async def start(self, node_id: str, handler: InboundHandler) -> None:
        """Connect, create this node's inboxes, and start delivering to ``handler``.

        Raises TransportUnavailable if the broker cannot be reached at all.
        """

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether items sent now can leave; False while reconnecting."""

    @abstractmethod
    def send(
        self, node: str, item: bytes, *, persistent: bool, expires_at: float | None = None
    ) -> None:
        """Queue ``item`` for ``node``'s command inbox.

        A ``persistent`` item survives a broker restart and is kept, while disconnected, until it
        can be published and the broker confirms it (it may then arrive twice: receivers drop
        duplicates by message id). A transient item is dropped if it cannot leave now, and
        expires at ``expires_at`` (``time.time()`` seconds) if not consumed by then.
        """

    @abstractmethod
    def send_control(self, node: str, item: bytes, *, expires_at: float | None = None) -> None:
        """Queue ``item`` for ``node``'s control inbox: transient, best effort."""

    @abstractmethod
    def broadcast(self, item: bytes, *, ttl: float) -> None:
        """Queue ``item`` for every node's control inbox (this node's too); expires in ``ttl`` s."""

    @abstractmethod
    async def close(self) -> None:
        """Flush what is queued (persistent items wait for their confirms, briefly), then
        disconnect. Idempotent."""
