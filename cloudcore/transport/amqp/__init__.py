"""The RabbitMQ transport (aio-pika): durable per-node inboxes, batches, confirms, reconnects."""

from cloudcore.transport.amqp.transport import AmqpTransport

__all__ = ["AmqpTransport"]
