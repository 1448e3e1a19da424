"""One connection to RabbitMQ and the topology a node needs on it.

Topology (``X`` is the configured exchange):

- ``X`` (topic, durable): every node publishes here.
- ``X.node.<id>`` (durable; quorum or classic): the node's command inbox, bound to
  ``node.<id>``; it outlives the node, so commands sent while it is down wait for it.
  Rejected, expired and (quorum) too-often-redelivered batches go to ``X.dlx``.
- ``X.ctl.<id>.<token>`` (exclusive, auto-delete, transient): replies and heartbeats, bound to
  ``ctl.<id>`` and ``ctl.broadcast``; it vanishes with the connection.
- ``X.dlx`` (fanout, durable) into ``X.dead-letters`` (durable): kept for operators.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from typing import Any

import aio_pika
import aiormq
from yarl import URL

from cloudcore.config import TransportSettings
from cloudcore.errors import ConfigError
from cloudcore.transport.amqp._aiormq_adapter import concrete

__all__ = [
    "BROADCAST_KEY",
    "Link",
    "Names",
    "amqp_url",
    "open_link",
    "redacted",
    "tls_context",
]

BROADCAST_KEY = "ctl.broadcast"


def amqp_url(settings: TransportSettings) -> str:
    """The broker URL with the credentials from the settings (the environment) filled in."""
    url = URL(settings.amqp_url)
    if settings.amqp_username:
        url = url.with_user(settings.amqp_username)
    if settings.amqp_password:
        url = url.with_password(settings.amqp_password)
    return str(url)


def tls_context(settings: TransportSettings) -> ssl.SSLContext | None:
    """The TLS context of an ``amqps://`` broker URL (None for ``amqp://``): the broker's
    certificate is verified, its host name included, against ``transport.amqp_ca_file`` if set,
    else the system's trusted CAs; a client certificate is presented if
    ``transport.amqp_cert_file`` (and ``amqp_key_file``) are set. Raises ConfigError naming the
    setting of a file that cannot be read."""
    if URL(settings.amqp_url).scheme != "amqps":
        return None
    try:
        context = ssl.create_default_context(cafile=settings.amqp_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"transport.amqp_ca_file: cannot load {settings.amqp_ca_file!r}: {exc}"
        ) from exc
    if settings.amqp_cert_file:
        try:
            context.load_cert_chain(settings.amqp_cert_file, settings.amqp_key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"transport.amqp_cert_file: cannot load {settings.amqp_cert_file!r}: {exc}"
            ) from exc
    return context


def redacted(url: str) -> str:
    """``url`` fit for a log line: the password replaced."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else str(parsed)


class Names:
    """Exchange, queue and routing-key names for one node."""

    def __init__(self, exchange: str, node: str) -> None:
        self.exchange = exchange
        self.dlx = f"{exchange}.dlx"
        self.dead_letters = f"{exchange}.dead-letters"
        self.node_queue = f"{exchange}.node.{node}"
        self.control_queue = f"{exchange}.ctl.{node}.{secrets.token_hex(4)}"

    @staticmethod
    def command_key(node: str) -> str:
        return f"node.{node}"

    @staticmethod
    def control_key(node: str) -> str:
        return f"ctl.{node}"


class Link:
    """An open connection: ``main`` consumes, acks and publishes transient batches; ``confirm``
    publishes persistent ones with publisher confirms. Both are aiormq's own channels, which the
    hot path drives through _aiormq_adapter."""

    def __init__(
        self,
        connection: aio_pika.abc.AbstractConnection,
        main: aiormq.Channel,
        confirm: aiormq.Channel,
    ) -> None:
        self.connection = connection
        self.main = main
        self.confirm = confirm

    def closing(self) -> list[asyncio.Future[Any]]:
        """Futures that complete when the connection or either channel closes."""
        return [self.main.closing, self.confirm.closing]

    async def close(self) -> None:
        await self.connection.close()


async def open_link(url: str, settings: TransportSettings, names: Names, node: str) -> Link:
    """Connect (over TLS for ``amqps://``, see :func:`tls_context`) and declare the node's
    topology. Raises on any broker or network error."""
    connection = await aio_pika.connect(
        url, timeout=5.0, client_properties={"node": node}, ssl_context=tls_context(settings)
    )
    try:
        main_ch = await connection.channel(publisher_confirms=False)
        confirm_ch = await connection.channel(publisher_confirms=True)
        await main_ch.set_qos(prefetch_count=settings.prefetch)
        exchange = await main_ch.declare_exchange(
            names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dlx = await main_ch.declare_exchange(names.dlx, aio_pika.ExchangeType.FANOUT, durable=True)
        dead = await main_ch.declare_queue(names.dead_letters, durable=True)
        await dead.bind(dlx, routing_key="")
        arguments: dict[str, Any] = {
            "x-queue-type": settings.queue_type,
            "x-dead-letter-exchange": names.dlx,
        }
        if settings.queue_type == "quorum":
            arguments["x-delivery-limit"] = settings.delivery_limit
        inbox = await main_ch.declare_queue(names.node_queue, durable=True, arguments=arguments)
        await inbox.bind(exchange, routing_key=Names.command_key(node))
        control = await main_ch.declare_queue(
            names.control_queue, durable=False, exclusive=True, auto_delete=True
        )
        await control.bind(exchange, routing_key=Names.control_key(node))
        await control.bind(exchange, routing_key=BROADCAST_KEY)
        return Link(
            connection,
            concrete(await main_ch.get_underlay_channel()),
            concrete(await confirm_ch.get_underlay_channel()),
        )
    except BaseException:
        await connection.close()
        raise
