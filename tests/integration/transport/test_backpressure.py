"""Persistent batches waiting for the broker are bounded: with the node's broker connection
closed (through a proxy, in this session's vhost), sends are refused with TransportUnavailable
past ``transport.max_unsent_bytes``, and once connected again every accepted message arrives,
in order, and sends are taken again."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import msgspec
import pytest
from structlog.testing import capture_logs

from cloudcore.config import TransportSettings
from cloudcore.errors import TransportUnavailable
from cloudcore.transport.amqp import AmqpTransport
from cloudcore.transport.base import Delivery, Item
from tests.integration.profiles.proxy import BrokerProxy
from tests.waiting import eventually

LIMIT = 8192
ITEM = 1000


class Inbox:
    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.connected = False

    def on_commands(self, items: Sequence[Item], delivery: Delivery) -> None:
        self.items.extend(bytes(i) for i in items)
        delivery.ack()

    def on_control(self, items: Sequence[Item]) -> None:
        pass

    def on_connection(self, connected: bool) -> None:
        self.connected = connected


def _item(n: int) -> bytes:
    """An encoded envelope stand-in of ITEM bytes (n < 128: a one-byte integer)."""
    item = msgspec.msgpack.encode([n, "x" * (ITEM - 5)])
    assert len(item) == ITEM
    return item


def _number(item: bytes) -> int:
    n: int = msgspec.msgpack.decode(item)[0]
    return n


async def _send_until_refused(sender: AmqpTransport, first: int) -> int:
    """Persistent sends of one batch each (parked before the next is offered), from item
    ``first`` on, until one is refused: how many were accepted."""
    accepted = 0
    while True:
        try:
            sender.send("b", _item(first + accepted), persistent=True)
        except TransportUnavailable:
            return accepted
        accepted += 1
        await eventually(lambda kept=accepted * ITEM: sender.unsent_bytes >= kept)
        assert accepted < 100, "never refused"


async def test_sends_past_the_bound_are_refused_while_disconnected_and_none_is_lost(
    amqp_url: str,
) -> None:
    exchange = f"cc-bp-{secrets.token_hex(4)}"
    proxy = BrokerProxy()
    await proxy.start()
    sender_inbox, receiver_inbox = Inbox(), Inbox()
    sender = AmqpTransport(
        TransportSettings(
            amqp_url=proxy.url(amqp_url),
            exchange=exchange,
            queue_type="classic",
            max_unsent_bytes=LIMIT,
            reconnect_max_delay=0.2,
        )
    )
    receiver = AmqpTransport(
        TransportSettings(amqp_url=amqp_url, exchange=exchange, queue_type="classic")
    )
    try:
        await receiver.start("b", receiver_inbox)
        await sender.start("a", sender_inbox)
        sender.send("b", _item(0), persistent=True)
        await eventually(lambda: len(receiver_inbox.items) == 1)

        proxy.cut()
        await eventually(lambda: not sender_inbox.connected)
        with capture_logs() as logs:
            kept = await _send_until_refused(sender, 1)
            with pytest.raises(TransportUnavailable) as refused:  # again, while nothing moves
                sender.send("b", _item(99), persistent=True)
        assert "transport.max_unsent_bytes" in str(refused.value)
        assert refused.value.retryable
        # Refused once the bound was reached, not before: at most one batch past LIMIT kept.
        assert kept == LIMIT // ITEM + 1
        assert [e["event"] for e in logs].count("transport.backpressure") == 1
        accepted = 1 + kept

        proxy.heal()
        await eventually(lambda: sender_inbox.connected, timeout=15)
        await eventually(lambda: len(receiver_inbox.items) == accepted, timeout=15)
        assert [_number(i) for i in receiver_inbox.items] == list(range(accepted))
        assert sender.unsent_bytes == 0
        sender.send("b", _item(accepted), persistent=True)  # taken again
        await eventually(lambda: len(receiver_inbox.items) == accepted + 1)
    finally:
        await sender.close()
        await receiver.close()
        await proxy.close()
