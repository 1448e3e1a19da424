"""Bounded mailboxes and dead letters."""

from __future__ import annotations

import asyncio

import pytest

from cloudcore.errors import MailboxFull
from cloudcore.runtime import ActorSystem, DeadLetter, Mailbox, Overflow

from .conftest import Recorder
from .messages import Get, Ping, Sleep
from .probe import Probe


async def _busy(system: ActorSystem, rec: Recorder, overflow: Overflow) -> Probe:
    probe = system.spawn(Probe, rec, name="p", mailbox=Mailbox(capacity=2, overflow=overflow))
    asyncio.get_running_loop().create_task(probe.ask(Sleep(seconds=0.1)))
    await rec.until(lambda items: ("sleeping", "/user/p") in items)
    probe.tell(Ping(n=1))
    probe.tell(Ping(n=2))  # mailbox now holds its capacity
    return probe  # type: ignore[return-value]


async def test_a_full_mailbox_that_refuses_raises_mailbox_full_to_the_sender(
    system: ActorSystem, rec: Recorder
) -> None:
    probe = await _busy(system, rec, Overflow.REFUSE)
    with pytest.raises(MailboxFull, match="/user/p") as caught:
        probe.tell(Ping(n=3))
    assert caught.value.retryable
    with pytest.raises(MailboxFull):
        await probe.ask(Get())
    await rec.until(lambda items: ("ping", "/user/p", 2) in items)
    assert ("ping", "/user/p", 3) not in rec.items
    probe.tell(Ping(n=4))  # room again once drained
    assert await probe.ask(Get()) == 3


async def test_a_full_mailbox_that_drops_sends_the_message_to_dead_letters(
    system: ActorSystem, rec: Recorder
) -> None:
    seen: list[DeadLetter] = []
    unsubscribe = system.dead_letters.subscribe(seen.append)
    probe = await _busy(system, rec, Overflow.DROP)
    probe.tell(Ping(n=3))  # no error for the sender
    assert [(d.recipient, d.message, d.reason) for d in seen] == [
        ("/user/p", Ping(n=3), "mailbox full")
    ]
    with pytest.raises(MailboxFull):
        await probe.ask(Get())  # an ask is not left hanging
    unsubscribe()
    await rec.until(lambda items: ("ping", "/user/p", 2) in items)
    assert await probe.ask(Get()) == 2


async def test_messages_to_a_stopped_actor_go_to_dead_letters(
    system: ActorSystem, rec: Recorder
) -> None:
    probe = system.spawn(Probe, rec, name="gone")
    probe.stop()
    await probe.stopped()
    seen: list[DeadLetter] = []
    system.dead_letters.subscribe(seen.append)
    probe.tell(Ping(n=9))
    assert len(seen) == 1
    assert seen[0].recipient == "/user/gone" and seen[0].message == Ping(n=9)
    assert seen[0].message_type == "Ping" and seen[0].reason == "stopped"
    assert system.dead_letters.recent()[-1] == seen[0]


def test_a_mailbox_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox(capacity=0)
