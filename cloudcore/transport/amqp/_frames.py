"""Frames written straight onto an aiormq channel, without a coroutine.

aiormq's ``basic_publish``, ``basic_ack`` and ``basic_reject`` are coroutines; called from a
callback they each need a task (and a loop iteration) of their own. On a channel *without*
publisher confirms these operations only queue frames for the connection's writer, which is
all this module does, synchronously: one ``put_nowait`` per message. Persistent publishes do
not come here: they need aiormq's confirm bookkeeping.
"""

from __future__ import annotations

from typing import Any

from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

__all__ = ["ack_now", "publish_now", "reject_now"]


def _put(channel: Any, frames: list[Any]) -> bool:
    if channel.is_closed:
        return False
    channel.write_queue.put_nowait(
        ChannelFrame.marshall(channel_number=channel.number, frames=frames)
    )
    return True


def publish_now(
    channel: Any,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: spec.Basic.Properties,
) -> bool:
    """Queue a publish on a confirm-less channel; False if the channel is closed."""
    frames: list[Any] = [
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    size = channel.max_content_size
    frames.extend(ContentBody(body[i : i + size]) for i in range(0, len(body), size))
    return _put(channel, frames)


def ack_now(channel: Any, delivery_tag: int) -> bool:
    return _put(channel, [spec.Basic.Ack(delivery_tag=delivery_tag)])


def reject_now(channel: Any, delivery_tag: int) -> bool:
    return _put(channel, [spec.Basic.Reject(delivery_tag=delivery_tag, requeue=False)])
