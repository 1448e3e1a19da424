"""Domain supervision: a refusal (a CloudcoreError) resumes the actor; any other exception, a
bare ValueError included, is a bug and restarts it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.supervision import DOMAIN_STRATEGY, refusals_resume
from cloudcore.config import RuntimeSettings
from cloudcore.errors import IllegalTransition, InvalidRequest
from cloudcore.runtime import Actor, ActorSystem, Directive, Message


class Parse(Message, frozen=True, kw_only=True):
    text: str


class Refuse(Message, frozen=True, kw_only=True):
    pass


class Count(Message, frozen=True, kw_only=True):
    pass


class _Parser(Actor[Any]):
    def __init__(self) -> None:
        self.handled = 0

    async def receive(self, message: Any) -> Any:
        self.handled += 1
        match message:
            case Parse(text=text):
                return int(text)  # int("x") is a bug here, not the caller's fault
            case Refuse():
                raise InvalidRequest("text: not a number")
            case Count():
                return self.handled


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    system = ActorSystem(
        "test-node",
        RuntimeSettings(ask_timeout=2.0, shutdown_timeout=2.0),
        user_strategy=DOMAIN_STRATEGY,
    )
    yield system
    await system.shutdown()


def test_only_cloudcore_errors_are_refusals() -> None:
    assert refusals_resume(InvalidRequest("bad")) is Directive.RESUME
    assert refusals_resume(IllegalTransition("no")) is Directive.RESUME
    assert refusals_resume(ValueError("invalid literal for int()")) is Directive.RESTART
    assert refusals_resume(KeyError("x")) is Directive.RESTART


async def test_a_value_error_inside_an_actor_restarts_it(system: ActorSystem) -> None:
    ref = system.spawn(_Parser, name="parser")
    assert await ref.ask(Parse(text="1")) == 1
    with pytest.raises(ValueError, match="invalid literal"):
        await ref.ask(Parse(text="x"))
    assert await ref.ask(Count()) == 1  # a fresh instance: its count started again
    info = system.tree("/user/parser")
    assert info.restarts == 1
    assert info.last_failure is not None and "ValueError" in info.last_failure


async def test_an_invalid_request_is_refused_and_the_actor_goes_on(system: ActorSystem) -> None:
    ref = system.spawn(_Parser, name="parser")
    assert await ref.ask(Parse(text="1")) == 1
    with pytest.raises(InvalidRequest, match="text"):
        await ref.ask(Refuse())
    assert await ref.ask(Count()) == 3  # the same instance: nothing was lost
    assert system.tree("/user/parser").restarts == 0


async def test_a_cluster_nodes_top_level_actor_answers_refusals_and_goes_on() -> None:
    """As the datacenter port on a node: refused again and again, it stays, and still works
    (the runtime's default strategy stops an actor after two failures within 5 s)."""
    from cloudcore.cluster import ClusterNode
    from cloudcore.config import NodeSettings, Settings
    from cloudcore.transport import LocalHub, LocalTransport

    settings = Settings(node=NodeSettings(id="n1"))
    node = ClusterNode(
        settings, transport=LocalTransport(LocalHub()), user_strategy=DOMAIN_STRATEGY
    )
    await node.start()
    try:
        port = node.system.spawn(_Parser, name="port")
        for _ in range(4):
            with pytest.raises(InvalidRequest):
                await port.ask(Refuse())
        assert await port.ask(Parse(text="7")) == 7
    finally:
        await node.stop()
