"""The ``amqp`` transport: RabbitMQ through aio-pika (its aiormq channels on the hot path).

- Batches: everything queued for one node in one loop tick is one AMQP message (see _batcher).
- Every batch is published on one confirm channel (so order holds) without awaiting each
  confirm: up to ``confirm_window`` are in flight. A persistent batch whose confirm does not come
  (nack, lost channel) is kept and published again once connected, so it may arrive twice;
  receivers drop duplicates.
- Transient batches (asks, replies, heartbeats) carry a TTL and are dropped while disconnected.
- Persistent batches waiting for the broker are bounded: past ``max_unsent_bytes`` of them, a
  persistent send raises TransportUnavailable (retryable; the API answers 503 with Retry-After)
  until they are published. Back-pressure, not an unbounded queue in the node's memory.
- Received command batches are acknowledged through :class:`Delivery` when the node says so,
  on the channel they came from; an undecodable body is rejected to the dead-letter exchange.
- The connection is watched: on loss the node hears ``on_connection(False)`` and the transport
  reconnects with exponential back-off (with jitter) up to ``reconnect_max_delay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import deque
from collections.abc import Sequence
from functools import partial

import msgspec
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from cloudcore.config import TransportSettings
from cloudcore.errors import TransportUnavailable
from cloudcore.logging import get_logger
from cloudcore.transport.amqp._aiormq_adapter import (
    ack_now,
    publish_confirmed,
    publish_now,
    redelivered,
    reject_now,
)
from cloudcore.transport.amqp._batcher import Batch, Batcher
from cloudcore.transport.amqp._connection import (
    BROADCAST_KEY,
    Link,
    Names,
    amqp_url,
    open_link,
    redacted,
)
from cloudcore.transport.base import InboundHandler, Transport

__all__ = ["AmqpTransport"]

_log = get_logger("cloudcore.transport")

_CONTENT_TYPE = "application/x-cloudcore-batch"
_frames = msgspec.msgpack.Decoder(list[msgspec.Raw])


class _Delivery:
    """One received command batch; settled once, on the channel generation it came from."""

    __slots__ = ("_generation", "_settled", "_tag", "_transport", "redelivered")

    def __init__(
        self, transport: AmqpTransport, generation: int, tag: int, redelivered: bool
    ) -> None:
        self._transport = transport
        self._generation = generation
        self._tag = tag
        self._settled = False
        self.redelivered = redelivered

    def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._transport._settle(self._generation, self._tag, True)

    def dead_letter(self, items: Sequence[bytes], reason: str) -> None:
        self._transport._dead_letter(list(items), reason)


class AmqpTransport(Transport):
    """One node's link to RabbitMQ. See the module docstring for the guarantees."""

    def __init__(self, settings: TransportSettings) -> None:
        self._settings = settings
        self._url = amqp_url(settings)
        self._names: Names | None = None
        self._node = ""
        self._handler: InboundHandler | None = None
        self._link: Link | None = None
        self._generation = 0
        self._batcher = Batcher(
            max_bytes=settings.batch_max_bytes,
            max_count=settings.batch_max_count,
            max_delay=settings.batch_max_delay,
            on_ready=self._on_ready,
        )
        self._unsent: deque[Batch] = deque()
        self._unsent_bytes = 0  # of the batches in _unsent
        self._refusing = False  # over max_unsent_bytes (logged once per episode)
        self._inflight: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None  # reconnects
        self._writer: asyncio.Task[None] | None = None  # the one task that writes
        self._closing = False
        self._draining = False
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ Transport

    async def start(self, node_id: str, handler: InboundHandler) -> None:
        self._node = node_id
        self._names = Names(self._settings.exchange, node_id)
        self._handler = handler
        try:
            link = await open_link(self._url, self._settings, self._names, node_id)
        except Exception as exc:
            raise TransportUnavailable(
                f"cannot reach the broker at {redacted(self._url)}: {exc!r}"
            ) from exc
        await self._attach(link)
        _log.info("transport.connected", node=node_id, broker=redacted(self._url))
        loop = asyncio.get_running_loop()
        self._supervisor = loop.create_task(self._supervise(link), name=f"amqp-link-{node_id}")
        self._writer = loop.create_task(self._write(), name=f"amqp-writer-{node_id}")
        handler.on_connection(True)

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def unsent_bytes(self) -> int:
        """Bytes of persistent batches kept until the broker takes them."""
        return self._unsent_bytes

    def send(
        self, node: str, item: bytes, *, persistent: bool, expires_at: float | None = None
    ) -> None:
        if persistent:
            self._check_backlog()
        self._batcher.add(
            self._settings.exchange,
            Names.command_key(node),
            item,
            persistent=persistent,
            expires_at=None if persistent else expires_at,
        )

    def _check_backlog(self) -> None:
        limit = self._settings.max_unsent_bytes
        if self._unsent_bytes < limit:
            if self._refusing:
                self._refusing = False
                _log.info("transport.backpressure_ended", node=self._node)
            return
        if not self._refusing:
            self._refusing = True
            _log.warning("transport.backpressure", node=self._node, unsent_bytes=self._unsent_bytes)
        raise TransportUnavailable(
            f"{self._unsent_bytes} bytes of persistent messages wait for the broker "
            f"(transport.max_unsent_bytes = {limit}): refused until they are published"
        )

    def send_control(self, node: str, item: bytes, *, expires_at: float | None = None) -> None:
        self._batcher.add(
            self._settings.exchange,
            Names.control_key(node),
            item,
            persistent=False,
            expires_at=expires_at,
        )

    def broadcast(self, item: bytes, *, ttl: float) -> None:
        self._batcher.add(
            self._settings.exchange,
            BROADCAST_KEY,
            item,
            persistent=False,
            expires_at=time.time() + ttl,
        )

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._batcher.flush()
        tasks = [t for t in (self._supervisor, self._writer) if t is not None]
        for task in tasks:
            task.cancel()
        link = self._link
        await asyncio.gather(*tasks, return_exceptions=True)
        if link is not None and self._link is link:
            try:
                await asyncio.wait_for(self._drain(link), 5.0)
                if self._inflight:
                    await asyncio.wait(self._inflight, timeout=5.0)
            except (TimeoutError, Exception) as exc:  # closing anyway: report what was left
                _log.warning("transport.close_unflushed", node=self._node, error=repr(exc))
        self._link = None
        if link is not None:
            try:
                await link.close()
            except Exception as exc:
                _log.debug("transport.close_failed", node=self._node, error=repr(exc))
        left = len(self._unsent) + sum(b.persistent for b in self._batcher.ready)
        if left:
            _log.warning("transport.closed_with_unsent", node=self._node, batches=left)

    # ------------------------------------------------------------------ receiving

    async def _attach(self, link: Link) -> None:
        assert self._names is not None
        self._generation += 1
        generation = self._generation
        # Connected before consuming: deliveries (and their acks) start at once when a backlog
        # waits in the queue.
        self._link = link
        await link.main.basic_consume(
            self._names.node_queue, partial(self._on_commands, generation), no_ack=False
        )
        await link.main.basic_consume(self._names.control_queue, self._on_control, no_ack=True)

    async def _on_commands(self, generation: int, message: DeliveredMessage) -> None:
        assert self._handler is not None
        tag = message.delivery_tag or 0
        try:
            items = _frames.decode(message.body)
        except msgspec.DecodeError as exc:
            _log.error(
                "transport.batch_undecodable",
                node=self._node,
                size=len(message.body),
                error=str(exc),
            )
            self._settle(generation, tag, False)
            return
        self._handler.on_commands(items, _Delivery(self, generation, tag, redelivered(message)))

    async def _on_control(self, message: DeliveredMessage) -> None:
        assert self._handler is not None
        try:
            items = _frames.decode(message.body)
        except msgspec.DecodeError as exc:
            _log.error("transport.control_undecodable", node=self._node, error=str(exc))
            return
        self._handler.on_control(items)

    def _settle(self, generation: int, tag: int, ack: bool) -> None:
        # Delivery tags belong to the channel they came on: after a reconnect they are void
        # (the broker has requeued those deliveries already).
        link = self._link
        if link is None or generation != self._generation:
            return
        if ack:
            ack_now(link.main, tag)
        else:
            reject_now(link.main, tag)

    def _dead_letter(self, items: list[bytes], reason: str) -> None:
        assert self._names is not None
        batch = Batch(self._names.dlx, self._names.node_queue, persistent=True)
        batch.headers = {"x-cloudcore-reason": reason, "x-cloudcore-node": self._node}
        for item in items:
            batch.add(bytes(item), None)
        self._keep(batch)
        self._wake()

    # ------------------------------------------------------------------ the connection

    async def _supervise(self, link: Link) -> None:
        """Wait for the link to drop, then reconnect with back-off, forever."""
        assert self._names is not None and self._handler is not None
        while True:
            await asyncio.wait(link.closing(), return_when=asyncio.FIRST_COMPLETED)
            self._link = None
            _log.warning("transport.disconnected", node=self._node)
            self._handler.on_connection(False)
            try:
                await link.close()
            except Exception as exc:
                _log.debug("transport.close_failed", node=self._node, error=repr(exc))
            link = await self._reconnect()
            _log.info("transport.reconnected", node=self._node, broker=redacted(self._url))
            self._handler.on_connection(True)
            self._wake()

    async def _reconnect(self) -> Link:
        assert self._names is not None
        delay = 0.1
        attempt = 0
        while True:
            await asyncio.sleep(delay * (0.5 + random.random()))
            attempt += 1
            try:
                link = await open_link(self._url, self._settings, self._names, self._node)
            except Exception as exc:
                _log.info(
                    "transport.reconnect_failed", node=self._node, attempt=attempt, error=repr(exc)
                )
                delay = min(delay * 2, self._settings.reconnect_max_delay)
                continue
            try:
                await self._attach(link)
                return link
            except Exception as exc:
                self._link = None
                with contextlib.suppress(Exception):
                    await link.close()
                _log.info(
                    "transport.reconnect_failed", node=self._node, attempt=attempt, error=repr(exc)
                )
                delay = min(delay * 2, self._settings.reconnect_max_delay)

    # ------------------------------------------------------------------ publishing

    def _wake(self) -> None:
        self._wakeup.set()

    def _on_ready(self) -> None:
        """Batches closed: publish them now if nothing is queued before them (one loop
        iteration less per message than going through the writer task), else wake it."""
        link = self._link
        ready = self._batcher.ready
        if link is not None and not self._draining and not self._unsent:
            window = self._settings.confirm_window
            while ready and len(self._inflight) < window:
                self._start_publish(link, ready.popleft())
        if ready:
            self._wake()

    async def _write(self) -> None:
        """The one task that writes to the broker: settlements, then batches in order."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            link = self._link
            if link is None:
                self._park()
                continue
            try:
                await self._drain(link)
            except Exception as exc:  # the link broke under us: _supervise takes over
                _log.debug("transport.write_failed", node=self._node, error=repr(exc))

    def _park(self) -> None:
        """Disconnected: keep persistent batches for later, drop transient ones."""
        ready = self._batcher.ready
        dropped = 0
        while ready:
            batch = ready.popleft()
            if batch.persistent:
                self._keep(batch)
            else:
                dropped += len(batch.items)
        if dropped:
            _log.debug("transport.dropped_transient", node=self._node, items=dropped)

    async def _drain(self, link: Link) -> None:
        self._draining = True
        try:
            await self._drain_once(link)
        finally:
            self._draining = False

    async def _drain_once(self, link: Link) -> None:
        unsent = self._unsent
        while unsent and self._link is link:
            batch = unsent.popleft()
            self._unsent_bytes -= batch.size
            await self._publish(link, batch)
        ready = self._batcher.ready
        while ready and self._link is link:
            await self._publish(link, ready.popleft())

    def _keep(self, batch: Batch) -> None:
        """Keep a persistent batch to publish once connected (counted against the bound)."""
        self._unsent.append(batch)
        self._unsent_bytes += batch.size

    async def _publish(self, link: Link, batch: Batch) -> None:
        inflight = self._inflight
        while len(inflight) >= self._settings.confirm_window:
            await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        self._start_publish(link, batch)

    def _start_publish(self, link: Link, batch: Batch) -> None:
        """Publish ``batch``.

        Persistent batches go through the confirm channel, in order; each confirm is awaited
        in a task of its own, so up to ``confirm_window`` batches are in flight. Transient
        batches (asks, replies, heartbeats: control queues only) go through the main channel
        without confirms; their order against tells is kept by the receiver (see
        cloudcore.cluster.wire, ``after``).
        """
        if batch.persistent:
            properties = Basic.Properties(
                delivery_mode=2,
                content_type=_CONTENT_TYPE,
                message_id=str(next(self._ids)),
                headers=dict(batch.headers) if batch.headers else None,
            )
        else:
            expiration = None
            if batch.expires_at is not None:
                left = batch.expires_at - time.time()
                if left <= 0:
                    return
                expiration = str(max(1, int(left * 1000)))
            properties = Basic.Properties(
                delivery_mode=1,
                expiration=expiration,
                content_type=_CONTENT_TYPE,
                message_id=str(next(self._ids)),
            )
            publish_now(
                link.main,
                batch.body(),
                exchange=batch.exchange,
                routing_key=batch.routing_key,
                properties=properties,
            )
            return
        task = asyncio.get_running_loop().create_task(self._confirm(link, batch, properties))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _confirm(self, link: Link, batch: Batch, properties: Basic.Properties) -> None:
        try:
            result = await publish_confirmed(
                link.confirm,
                batch.body(),
                exchange=batch.exchange,
                routing_key=batch.routing_key,
                properties=properties,
            )
        except Exception as exc:
            if batch.persistent:
                self._keep(batch)
            _log.debug("transport.publish_unconfirmed", node=self._node, error=repr(exc))
            return
        if not isinstance(result, Basic.Ack) and batch.persistent:
            _log.warning("transport.publish_nacked", node=self._node, result=type(result).__name__)
            self._keep(batch)
            asyncio.get_running_loop().call_later(0.5, self._wake)
