"""How envelopes travel between nodes: ``local`` (in-process) or ``amqp`` (RabbitMQ).

A transport moves opaque, already encoded envelopes (bytes); what they mean is the cluster's
business (cloudcore.cluster). Choosing one is configuration: actor code never sees it.
"""

from cloudcore.transport.base import Delivery, InboundHandler, Transport
from cloudcore.transport.factory import create_transport
from cloudcore.transport.local import LocalHub, LocalTransport

__all__ = [
    "Delivery",
    "InboundHandler",
    "LocalHub",
    "LocalTransport",
    "Transport",
    "create_transport",
]
