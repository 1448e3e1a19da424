"""The aiormq internals the AMQP transport relies on, against a real RabbitMQ: run this before
widening the aiormq pin in pyproject.toml."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from importlib.metadata import version

import aio_pika
import aiormq
import pytest
from pamqp import commands as spec

from cloudcore.transport.amqp._aiormq_adapter import (
    WRITTEN_AGAINST,
    ack_now,
    concrete,
    publish_confirmed,
    publish_now,
    redelivered,
    reject_now,
)
from tests.waiting import eventually


class Broker:
    """A connection with a confirm-less and a confirming aiormq channel, and a queue (with a
    dead-letter queue) of this test's own."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self.connection = connection
        self.queue = f"adapter-{secrets.token_hex(4)}"
        self.dead = f"{self.queue}.dead"

    async def open(self) -> Broker:
        plain = await self.connection.channel(publisher_confirms=False)
        confirming = await self.connection.channel(publisher_confirms=True)
        self.plain = concrete(await plain.get_underlay_channel())
        self.confirming = concrete(await confirming.get_underlay_channel())
        await self.plain.exchange_declare(f"{self.queue}.dlx", exchange_type="fanout")
        await self.plain.queue_declare(self.dead)
        await self.plain.queue_bind(self.dead, f"{self.queue}.dlx")
        await self.plain.queue_declare(
            self.queue, arguments={"x-dead-letter-exchange": f"{self.queue}.dlx"}
        )
        return self

    async def count(self, queue: str) -> int:
        declared = await self.plain.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)

    async def get(self, queue: str) -> aiormq.abc.DeliveredMessage:
        return await eventually(lambda: taken(self.plain, queue), timeout=5)


async def taken(channel: aiormq.Channel, queue: str) -> aiormq.abc.DeliveredMessage | None:
    """The next message of ``queue``, unacknowledged; None while it is empty (GetEmpty)."""
    got = await channel.basic_get(queue, no_ack=False)
    return got if isinstance(got.delivery, spec.Basic.GetOk) else None


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        opened = await Broker(connection).open()
        yield opened
        channel = await connection.channel()
        await channel.queue_delete(opened.queue)
        await channel.queue_delete(opened.dead)
        await channel.exchange_delete(f"{opened.queue}.dlx")


def test_the_installed_aiormq_is_the_one_the_adapter_was_written_against() -> None:
    major_minor = WRITTEN_AGAINST.rsplit(".", 1)[0]
    assert version("aiormq").startswith(major_minor + "."), version("aiormq")


async def test_publish_now_delivers_a_body_split_over_several_frames(broker: Broker) -> None:
    body = secrets.token_bytes(broker.plain.max_content_size * 2 + 17)  # three content frames
    properties = spec.Basic.Properties(content_type="application/x-test", message_id="m1")
    assert publish_now(
        broker.plain, body, exchange="", routing_key=broker.queue, properties=properties
    )
    got = await broker.get(broker.queue)
    assert got.body == body
    assert got.header.properties.content_type == "application/x-test"
    assert got.header.properties.message_id == "m1"
    assert redelivered(got) is False


async def test_ack_now_settles_and_reject_now_dead_letters(broker: Broker) -> None:
    for n in (b"1", b"2"):
        publish_now(
            broker.plain,
            n,
            exchange="",
            routing_key=broker.queue,
            properties=spec.Basic.Properties(),
        )
    first, second = await broker.get(broker.queue), await broker.get(broker.queue)
    assert ack_now(broker.plain, first.delivery_tag or 0)
    assert reject_now(broker.plain, second.delivery_tag or 0)
    dead = await broker.get(broker.dead)
    assert dead.body == second.body
    assert await broker.count(broker.queue) == 0  # the ack took: nothing came back


async def test_an_unacknowledged_message_comes_back_redelivered(
    broker: Broker, amqp_url: str
) -> None:
    publish_now(
        broker.plain,
        b"x",
        exchange="",
        routing_key=broker.queue,
        properties=spec.Basic.Properties(),
    )
    other = await aio_pika.connect(amqp_url)
    async with other:
        channel = concrete(await (await other.channel()).get_underlay_channel())
        first = await eventually(lambda: taken(channel, broker.queue), timeout=5)
        assert redelivered(first) is False
    # that connection closed without acknowledging: the broker gives the message back
    again = await broker.get(broker.queue)
    assert again.body == b"x"
    assert redelivered(again) is True


async def test_publish_confirmed_returns_the_brokers_ack(broker: Broker) -> None:
    result = await publish_confirmed(
        broker.confirming,
        b"kept",
        exchange="",
        routing_key=broker.queue,
        properties=spec.Basic.Properties(delivery_mode=2),
    )
    assert isinstance(result, spec.Basic.Ack)
    assert (await broker.get(broker.queue)).body == b"kept"


async def test_on_a_closed_channel_the_frames_are_refused(broker: Broker) -> None:
    await broker.plain.close()
    properties = spec.Basic.Properties()
    assert not publish_now(broker.plain, b"x", exchange="", routing_key="q", properties=properties)
    assert not ack_now(broker.plain, 1)
    assert not reject_now(broker.plain, 1)


def test_only_an_aiormq_channel_is_taken() -> None:
    with pytest.raises(TypeError, match=r"aiormq\.Channel"):
        concrete(object())  # type: ignore[arg-type]
