"""The amqp transport without a broker: a clear, retryable error, and no password in logs."""

from __future__ import annotations

import pytest

from cloudcore.cluster import ClusterNode
from cloudcore.config import NodeSettings, Settings, TransportSettings
from cloudcore.errors import TransportUnavailable
from cloudcore.transport.amqp._connection import amqp_url, redacted


async def test_no_broker_is_a_retryable_transport_error() -> None:
    settings = Settings(
        node=NodeSettings(id="lonely"),
        transport=TransportSettings(
            kind="amqp", amqp_url="amqp://127.0.0.1:1/", dedup_journal=False
        ),
    )
    node = ClusterNode(settings)
    with pytest.raises(TransportUnavailable, match=r"127\.0\.0\.1:1") as caught:
        await node.start()
    assert caught.value.retryable
    assert not node.connected


def test_credentials_come_from_settings_and_never_reach_a_log_line() -> None:
    settings = TransportSettings(
        amqp_url="amqp://broker:5672/vh", amqp_username="svc", amqp_password="s3cret"
    )
    url = amqp_url(settings)
    assert url == "amqp://svc:s3cret@broker:5672/vh"
    assert "s3cret" not in redacted(url)
    assert redacted(url) == "amqp://svc:***@broker:5672/vh"
