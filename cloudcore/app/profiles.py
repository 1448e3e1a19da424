"""Profiles: which groups of services a node runs.

- ``monolithic`` (the embedded default): the API, the cluster-wide services and the datacenters
  (every one in the store, or the one ``capabilities.datacenter`` names).
- ``server``: the API and the cluster-wide services (quota reconciliation and the purge of
  expired idempotency keys at start, the listener that turns other nodes' ``task.finished``
  events into answers for waiters), no datacenter.
- ``remote-services``: the datacenters ``capabilities.datacenter`` names (comma-separated), no API.

Every node relays the events it writes (its outbox relay). A datacenter's actors run on one node
at a time whatever the profile: the node holds the
datacenter's lease in the store (see :mod:`actors.ownership`). A server or remote-services node
belongs to a cluster, so it needs the shared backends; :func:`plan_of` refuses a configuration
that cannot work, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudcore.config import Settings
from cloudcore.errors import ConfigError

__all__ = ["Plan", "plan_of"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What one node runs."""

    profile: str
    #: The HTTP API.
    api: bool
    #: The services of which a cluster needs one or more (quota reconciliation, ...).
    cluster_services: bool
    #: The datacenters this node may run: None for every one in the store, else these ids
    #: (empty: none).
    datacenters: frozenset[str] | None

    @property
    def runs_datacenters(self) -> bool:
        return self.datacenters is None or bool(self.datacenters)


def plan_of(settings: Settings) -> Plan:
    """The services ``settings`` ask for; ConfigError naming the key if they cannot work."""
    node = settings.node
    named = _datacenters(node.capabilities.get("datacenter", ""))
    if node.profile == "monolithic":
        return Plan(
            profile=node.profile,
            api=settings.api.enabled,
            cluster_services=True,
            datacenters=named or None,
        )
    _check_clustered(settings)
    if node.profile == "server":
        if named:
            raise ConfigError(
                "node.profile = 'server' runs no datacenter: drop node.capabilities.datacenter "
                "or run this node with profile 'remote-services'"
            )
        return Plan(
            profile=node.profile,
            api=settings.api.enabled,
            cluster_services=True,
            datacenters=frozenset(),
        )
    if not named:
        raise ConfigError(
            "node.profile = 'remote-services' needs the datacenters it runs in "
            'node.capabilities.datacenter (for example { datacenter = "dc1" })'
        )
    return Plan(profile=node.profile, api=False, cluster_services=False, datacenters=named)


def _datacenters(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _check_clustered(settings: Settings) -> None:
    profile = settings.node.profile
    wanted = (
        ("transport.kind", settings.transport.kind, "amqp"),
        ("store.backend", settings.store.backend, "postgres"),
        ("events.backend", settings.events.backend, "redis"),
    )
    for key, value, needed in wanted:
        if value != needed:
            raise ConfigError(
                f"node.profile = {profile!r} joins a cluster: it needs {key} = {needed!r}, "
                f"got {value!r}"
            )
