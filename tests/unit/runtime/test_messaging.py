"""tell, ask, timeouts, refs and message validation."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from cloudcore.errors import ActorError, ActorStopped, AskTimeout, InvalidMessage
from cloudcore.runtime import Actor, ActorSystem, Message

from .conftest import Recorder
from .messages import Forward, Get, Ping, Sleep
from .probe import Probe


async def test_tell_is_handled_in_order_and_ask_returns_the_reply(
    system: ActorSystem, rec: Recorder
) -> None:
    probe = system.spawn(Probe, rec, name="p")
    for n in range(100):
        probe.tell(Ping(n=n))
    assert await probe.ask(Get()) == 100
    pings = [item[2] for item in rec.items if item[0] == "ping"]
    assert pings == list(range(100))


async def test_ask_times_out_with_a_timeout_error(system: ActorSystem, rec: Recorder) -> None:
    probe = system.spawn(Probe, rec)
    with pytest.raises(AskTimeout) as caught:
        await probe.ask(Sleep(seconds=0.2), timeout=0.05)
    assert isinstance(caught.value, TimeoutError)
    assert "Sleep" in str(caught.value) and probe.path in str(caught.value)


async def test_a_request_whose_deadline_passed_in_the_mailbox_is_not_handled(
    system: ActorSystem, rec: Recorder
) -> None:
    probe = system.spawn(Probe, rec)
    busy = asyncio.create_task(probe.ask(Sleep(seconds=0.3)))
    await rec.until(lambda items: ("sleeping", probe.path) in items)
    with pytest.raises(AskTimeout):
        await probe.ask(Ping(n=1), timeout=0.05)
    await busy
    assert await probe.ask(Get()) == 0  # the expired Ping never ran
    assert [d.reason for d in system.dead_letters.recent()] == ["expired"]


async def test_ask_on_a_stopped_actor_fails_at_once(system: ActorSystem, rec: Recorder) -> None:
    probe = system.spawn(Probe, rec)
    probe.stop()
    await probe.stopped()
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ActorStopped):
        await probe.ask(Get(), timeout=10)
    assert loop.time() - start < 0.5


async def test_an_ask_queued_when_the_actor_stops_fails_instead_of_hanging(
    system: ActorSystem, rec: Recorder
) -> None:
    probe = system.spawn(Probe, rec)
    first = asyncio.create_task(probe.ask(Sleep(seconds=0.1)))
    queued = asyncio.create_task(probe.ask(Get(), timeout=10))
    await rec.until(lambda items: ("sleeping", probe.path) in items)
    probe.stop()
    assert await first == 0.1  # the message in hand is finished
    with pytest.raises(ActorStopped):
        await queued


class NotFrozen(msgspec.Struct, tag=True):
    x: int = 0


class NotTagged(msgspec.Struct, frozen=True):
    x: int = 0


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({"op": "ping"}, "builtins.dict"),
        ("ping", "builtins.str"),
        (NotFrozen(), "NotFrozen"),
        (NotTagged(), "NotTagged"),
    ],
)
async def test_a_message_that_is_not_a_frozen_tagged_struct_is_refused_naming_its_type(
    system: ActorSystem, rec: Recorder, message: Any, named: str
) -> None:
    probe = system.spawn(Probe, rec)
    with pytest.raises(TypeError, match=named) as caught:
        probe.tell(message)
    assert isinstance(caught.value, InvalidMessage)
    with pytest.raises(TypeError, match=named):
        await probe.ask(message)
    assert await probe.ask(Get()) == 0


async def test_refs_are_hashable_print_as_their_path_and_travel_in_messages(
    system: ActorSystem, rec: Recorder
) -> None:
    a = system.spawn(Probe, rec, name="a")
    b = system.spawn(Probe, rec, name="b")
    assert str(a) == "/user/a" and "/user/a" in repr(a)
    assert system.lookup("/user/a") == a and hash(system.lookup("/user/a")) == hash(a)
    assert len({a, b, system.lookup("/user/b")}) == 2
    a.tell(Forward(to=b, n=7))
    await rec.until(lambda items: ("ping", "/user/b", 7) in items)
    encoded = msgspec.json.encode(Ping(n=1, correlation_id="c-1"))
    assert msgspec.json.decode(encoded, type=Ping) == Ping(n=1, correlation_id="c-1")


class Deadlines(Actor[Sleep]):
    async def receive(self, message: Sleep) -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(message.seconds)
        except TimeoutError:
            return "timed out"
        return "done"


async def test_receive_runs_in_a_task_of_its_own_so_asyncio_timeout_works(
    system: ActorSystem,
) -> None:
    ref = system.spawn(Deadlines)
    assert await ref.ask(Sleep(seconds=1.0)) == "timed out"
    assert await ref.ask(Sleep(seconds=0)) == "done"


async def test_actors_cannot_be_created_by_calling_the_class() -> None:
    with pytest.raises(ActorError, match="spawn"):
        Probe(print)


async def test_messages_carry_a_correlation_id() -> None:
    class Tagged(Message, frozen=True, kw_only=True):
        vm_id: str

    message = Tagged(vm_id="vm-1", correlation_id="req-9")
    assert message.correlation_id == "req-9"
    assert msgspec.json.decode(msgspec.json.encode(message), type=Tagged) == message
