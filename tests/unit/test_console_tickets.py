"""Console tickets: each opens one console, once, before it expires (kept in a store; see
tests/component/web/test_shared_grants.py for two nodes sharing one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudcore.app.gateway.consoles import ConsoleTickets, _digest
from cloudcore.store import Store
from hypervisor_drivers.types import ConsoleEndpoint
from tests.cloud import sqlite_store  # noqa: F401 - fixtures

ENDPOINT = ConsoleEndpoint(host="127.0.0.1", port=5900)


async def test_a_ticket_is_spent_once(sqlite_store: Store) -> None:  # noqa: F811 - the fixture
    tickets = ConsoleTickets(sqlite_store, 30.0)
    secret = await tickets.issue("vm-1", "usr-1", ENDPOINT)
    assert await tickets.peek(secret) is not None  # looking does not spend it
    ticket = await tickets.spend(secret)
    assert ticket is not None and (ticket.vm_id, ticket.endpoint) == ("vm-1", ENDPOINT)
    assert await tickets.spend(secret) is None
    assert await tickets.peek(secret) is None


async def test_a_ticket_expires_after_its_lifetime(sqlite_store: Store) -> None:  # noqa: F811 - the fixture
    tickets = ConsoleTickets(sqlite_store, 30.0)
    secret = await tickets.issue("vm-1", "usr-1", ENDPOINT)
    soon = datetime.now(UTC) + timedelta(seconds=29)
    assert await sqlite_store.get_grant(_digest(secret), "console", at=soon) is not None
    later = datetime.now(UTC) + timedelta(seconds=30.5)
    assert await sqlite_store.get_grant(_digest(secret), "console", at=later) is None
    assert await sqlite_store.take_grant(_digest(secret), "console", at=later) is None


async def test_tickets_are_unguessable_and_distinct(sqlite_store: Store) -> None:  # noqa: F811 - the fixture
    tickets = ConsoleTickets(sqlite_store, 30.0)
    secrets = {await tickets.issue("vm-1", "usr-1", ENDPOINT) for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) >= 43 for s in secrets)  # 256 random bits
    assert await tickets.spend("not-a-ticket") is None
