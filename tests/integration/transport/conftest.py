"""Real RabbitMQ on 127.0.0.1:5672, in a vhost of this session's own (made with rabbitmqctl,
deleted at the end), as for the cluster tests."""

from tests.integration.cluster.conftest import amqp_url  # noqa: F401 - fixture
