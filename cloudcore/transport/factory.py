"""Build the transport the settings name."""

from __future__ import annotations

from cloudcore.config import TransportSettings
from cloudcore.transport.base import Transport
from cloudcore.transport.local import LocalHub, LocalTransport

__all__ = ["create_transport"]

_default_hub: LocalHub | None = None


def create_transport(settings: TransportSettings, *, hub: LocalHub | None = None) -> Transport:
    """A new transport for one node. ``local`` joins ``hub`` (default: one hub per process);
    ``amqp`` imports aio-pika only when chosen."""
    global _default_hub
    if settings.kind == "amqp":
        from cloudcore.transport.amqp import AmqpTransport

        return AmqpTransport(settings)
    if hub is None:
        if _default_hub is None:
            _default_hub = LocalHub()
        hub = _default_hub
    return LocalTransport(hub)
