"""Every use of aiormq beyond its documented API, in one place.

Written against aiormq 7.2.4 (under aio-pika 10.2.1); pyproject.toml pins ``aiormq>=7.2.4,<7.3``.
Before widening the pin, run ``tests/integration/transport/test_aiormq_adapter.py`` on the new
version: it exercises each of the internals below against a real RabbitMQ.

What this module relies on, all of ``aiormq.Channel``:

- ``write_queue``, ``number`` and ``max_content_size`` with ``ChannelFrame.marshall``: frames
  queued for the connection's writer synchronously. aiormq's ``basic_publish``, ``basic_ack``
  and ``basic_reject`` are coroutines; called from a callback they each need a task (and a loop
  iteration) of their own. On a channel *without* publisher confirms those operations only
  queue frames for the writer, which is all :func:`publish_now`, :func:`ack_now` and
  :func:`reject_now` do: one ``put_nowait`` each. Persistent publishes do not come here: they
  need aiormq's confirm bookkeeping.
- ``basic_publish(..., wait=False)``: a keyword of the concrete channel that
  ``aiormq.abc.AbstractChannel`` lacks; it queues the frames without waiting for the socket to
  drain, so :func:`publish_confirmed` waits for the broker's confirm only.
- ``DeliveredMessage.delivery.redelivered``: present on ``Basic.Deliver`` and ``Basic.GetOk``,
  typed as a union that includes frames without it.
"""

from __future__ import annotations

import aiormq
from aiormq.abc import AbstractChannel, ChannelFrame, ConfirmationFrameType, DeliveredMessage
from pamqp import commands as spec
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

__all__ = [
    "WRITTEN_AGAINST",
    "ack_now",
    "concrete",
    "publish_confirmed",
    "publish_now",
    "redelivered",
    "reject_now",
]

#: The aiormq version this adapter was written and tested against.
WRITTEN_AGAINST = "7.2.4"


def concrete(channel: AbstractChannel) -> aiormq.Channel:
    """``channel`` as the concrete aiormq channel whose internals this module uses (what
    aio-pika's ``get_underlay_channel`` returns); TypeError for anything else."""
    if not isinstance(channel, aiormq.Channel):
        raise TypeError(f"an aiormq.Channel is needed, not {type(channel).__qualname__}")
    return channel


def _put(channel: aiormq.Channel, frames: list[Frame | ContentHeader | ContentBody]) -> bool:
    if channel.is_closed:
        return False
    channel.write_queue.put_nowait(
        ChannelFrame.marshall(channel_number=channel.number, frames=frames)
    )
    return True


def publish_now(
    channel: aiormq.Channel,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: spec.Basic.Properties,
) -> bool:
    """Queue a publish on a confirm-less channel; False if the channel is closed."""
    frames: list[Frame | ContentHeader | ContentBody] = [
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    size = channel.max_content_size
    frames.extend(ContentBody(body[i : i + size]) for i in range(0, len(body), size))
    return _put(channel, frames)


def ack_now(channel: aiormq.Channel, delivery_tag: int) -> bool:
    """Queue an ack of ``delivery_tag``; False if the channel is closed."""
    return _put(channel, [spec.Basic.Ack(delivery_tag=delivery_tag)])


def reject_now(channel: aiormq.Channel, delivery_tag: int) -> bool:
    """Queue a reject of ``delivery_tag`` without requeue (to the dead-letter exchange, if the
    queue has one); False if the channel is closed."""
    return _put(channel, [spec.Basic.Reject(delivery_tag=delivery_tag, requeue=False)])


async def publish_confirmed(
    channel: aiormq.Channel,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: spec.Basic.Properties,
) -> ConfirmationFrameType | None:
    """Publish on a channel with publisher confirms and return the broker's answer (``Ack``,
    ``Nack`` or ``Reject``), not waiting for the socket to drain first. Raises what aiormq
    raises when the channel closes meanwhile."""
    return await channel.basic_publish(
        body, exchange=exchange, routing_key=routing_key, properties=properties, wait=False
    )


def redelivered(message: DeliveredMessage) -> bool:
    """Whether the broker delivered ``message`` before (and it was not acknowledged)."""
    delivery = message.delivery
    if isinstance(delivery, spec.Basic.Deliver | spec.Basic.GetOk):
        return bool(delivery.redelivered)
    return False
