"""Console tickets: each opens one console, once, before it expires."""

from __future__ import annotations

from cloudcore.app.gateway.consoles import ConsoleTickets
from hypervisor_drivers.types import ConsoleEndpoint

ENDPOINT = ConsoleEndpoint(host="127.0.0.1", port=5900)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_ticket_is_spent_once() -> None:
    tickets = ConsoleTickets(30.0, Clock())
    secret = tickets.issue("vm-1", "usr-1", ENDPOINT)
    assert tickets.peek(secret) is not None  # looking does not spend it
    ticket = tickets.spend(secret)
    assert ticket is not None and (ticket.vm_id, ticket.endpoint) == ("vm-1", ENDPOINT)
    assert tickets.spend(secret) is None
    assert tickets.peek(secret) is None


def test_a_ticket_expires_after_its_lifetime() -> None:
    clock = Clock()
    tickets = ConsoleTickets(30.0, clock)
    secret = tickets.issue("vm-1", "usr-1", ENDPOINT)
    clock.now += 29.9
    assert tickets.peek(secret) is not None
    clock.now += 0.1
    assert tickets.peek(secret) is None
    assert tickets.spend(secret) is None


def test_tickets_are_unguessable_and_distinct() -> None:
    tickets = ConsoleTickets(30.0, Clock())
    secrets = {tickets.issue("vm-1", "usr-1", ENDPOINT) for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) >= 43 for s in secrets)  # 256 random bits
    assert tickets.spend("not-a-ticket") is None
