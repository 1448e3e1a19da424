"""Supervision: restarts with fresh state, deciders, intensity, strategies, backoff."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloudcore.errors import ActorInterrupted
from cloudcore.runtime import (
    ActorSystem,
    Backoff,
    Directive,
    Strategy,
    SupervisorStrategy,
)

from .conftest import Recorder
from .messages import Fail, Get, Ping, Sleep, Spawn, Watch
from .probe import Probe, supervising


def started(items: list[Any], path: str) -> int:
    return items.count(("started", path))


async def test_a_crash_restarts_the_actor_with_fresh_state_and_keeps_its_mailbox(
    system: ActorSystem, rec: Recorder
) -> None:
    probe = system.spawn(Probe, rec, name="p")
    probe.tell(Ping(n=1))
    probe.tell(Ping(n=2))
    assert await probe.ask(Get()) == 2
    probe.tell(Fail())
    probe.tell(Ping(n=3))  # queued behind the failure: must survive the restart
    await rec.until(lambda items: ("ping", "/user/p", 3) in items)
    assert await probe.ask(Get()) == 1  # fresh instance: the count started again
    assert ("before_restart", "/user/p", "RuntimeError") in rec.items
    info = system.tree("/user/p")
    assert info.restarts == 1 and info.status == "running"
    assert info.last_failure == "RuntimeError: boom"


async def test_an_exception_in_an_ask_reaches_the_asker_and_the_supervisor(
    system: ActorSystem, rec: Recorder
) -> None:
    probe = system.spawn(Probe, rec, name="p")
    probe.tell(Ping(n=1))
    with pytest.raises(RuntimeError, match="bad request"):
        await probe.ask(Fail(reason="bad request"))
    await rec.count(("started", "/user/p"), 2)
    assert await probe.ask(Get()) == 0


async def test_restarts_beyond_the_intensity_escalate_to_the_parent(
    system: ActorSystem, rec: Recorder
) -> None:
    # Default intensity: more than 1 restart within 5 s escalates.
    parent = system.spawn(Probe, rec, name="parent")
    child = await parent.ask(Spawn(name="child"))
    child.tell(Fail())
    await rec.count(("started", "/user/parent/child"), 2)
    child.tell(Fail())
    # The parent fails in turn: its before_restart sees the escalation, it restarts fresh.
    await rec.until(
        lambda items: ("before_restart", "/user/parent", "RestartIntensityExceeded") in items
    )
    await rec.count(("started", "/user/parent"), 2)
    assert ("stopping", "/user/parent/child") in rec.items  # restart stopped the old child
    assert system.tree("/user/parent").restarts == 1
    assert system.tree("/user/parent").children == ()  # a fresh parent has no child yet
    assert "RestartIntensityExceeded" in (system.tree("/user/parent").last_failure or "")


async def test_a_top_level_actor_past_its_intensity_is_stopped(
    system: ActorSystem, rec: Recorder
) -> None:
    watcher = system.spawn(Probe, rec, name="watcher")
    probe = system.spawn(Probe, rec, name="flaky")
    await watcher.ask(Watch(ref=probe))
    probe.tell(Fail())
    await rec.count(("started", "/user/flaky"), 2)
    probe.tell(Fail())
    await probe.stopped()
    await rec.until(lambda items: any(i[:2] == ("terminated", "/user/flaky") for i in items))
    reason = next(i[2] for i in rec.items if i[:2] == ("terminated", "/user/flaky"))
    assert reason.startswith("failed: RestartIntensityExceeded")


def _family(system: ActorSystem, rec: Recorder, kind: Strategy) -> None:
    strategy = SupervisorStrategy(kind=kind, max_restarts=5)
    system.spawn(supervising(strategy), rec, name="sup")


async def _spawn_children(system: ActorSystem) -> list[str]:
    sup = system.lookup("/user/sup")
    for name in ("a", "b", "c"):
        await sup.ask(Spawn(name=name))
    return [f"/user/sup/{n}" for n in ("a", "b", "c")]


def _restart_trace(items: list[Any]) -> list[tuple[str, str]]:
    """The hooks run after the initial start of everything, as (hook, name) pairs."""
    first_fail = next(i for i, item in enumerate(items) if item[0] == "failed")
    return [
        (item[0], item[1].rsplit("/", 1)[1])
        for item in items[first_fail:]
        if item[0] in ("before_restart", "started")
    ]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (Strategy.ONE_FOR_ONE, [("before_restart", "b"), ("started", "b")]),
        (
            Strategy.ONE_FOR_ALL,
            [
                ("before_restart", "c"),
                ("before_restart", "b"),
                ("before_restart", "a"),
                ("started", "a"),
                ("started", "b"),
                ("started", "c"),
            ],
        ),
        (
            Strategy.REST_FOR_ONE,
            [
                ("before_restart", "c"),
                ("before_restart", "b"),
                ("started", "b"),
                ("started", "c"),
            ],
        ),
    ],
)
async def test_each_strategy_restarts_exactly_the_right_siblings_in_order(
    system: ActorSystem, rec: Recorder, kind: Strategy, expected: list[tuple[str, str]]
) -> None:
    _family(system, rec, kind)
    a, b, c = await _spawn_children(system)
    for path in (a, b, c):
        system.lookup(path).tell(Ping(n=1))
    await rec.until(lambda items: sum(1 for i in items if i[0] == "ping") == 3)
    rec(("failed", b))
    system.lookup(b).tell(Fail())
    restarted = {name for _, name in expected}
    await rec.until(lambda items: all(started(items, f"/user/sup/{n}") == 2 for n in restarted))
    assert _restart_trace(rec.items) == expected
    for path in (a, b, c):
        name = path.rsplit("/", 1)[1]
        count = await system.lookup(path).ask(Get())
        assert count == (0 if name in restarted else 1), name
        assert system.tree(path).restarts == (1 if name in restarted else 0)


async def test_a_sibling_interrupted_by_a_group_restart_fails_its_asker(
    system: ActorSystem, rec: Recorder
) -> None:
    _family(system, rec, Strategy.ONE_FOR_ALL)
    a, b, _ = await _spawn_children(system)
    slow = asyncio.create_task(system.lookup(a).ask(Sleep(seconds=5)))
    await rec.until(lambda items: ("sleeping", a) in items)
    system.lookup(b).tell(Fail())
    with pytest.raises(ActorInterrupted):
        await slow


@pytest.mark.parametrize("directive", [Directive.RESUME, Directive.STOP])
async def test_the_decider_can_resume_or_stop_the_child(
    system: ActorSystem, rec: Recorder, directive: Directive
) -> None:
    strategy = SupervisorStrategy(decider=lambda error: directive)
    sup = system.spawn(supervising(strategy), rec, name="sup")
    child = await sup.ask(Spawn(name="child"))
    child.tell(Ping(n=1))
    child.tell(Fail())
    if directive is Directive.RESUME:
        child.tell(Ping(n=2))
        assert await child.ask(Get()) == 2  # same instance, state kept
        assert system.tree(child.path).restarts == 0
    else:
        await child.stopped()
        assert system.tree("/user/sup").children == ()
        assert ("stopping", child.path) in rec.items


async def test_escalate_directive_fails_the_parent_with_the_childs_error(
    system: ActorSystem, rec: Recorder
) -> None:
    strategy = SupervisorStrategy(decider=lambda error: Directive.ESCALATE)
    system.spawn(Probe, rec, name="grand")
    sup = system.spawn_under("/user/grand", supervising(strategy), rec, name="sup")
    child = await sup.ask(Spawn(name="child"))
    child.tell(Fail(reason="disk gone"))
    await rec.until(lambda items: ("before_restart", sup.path, "RuntimeError") in items)
    await rec.count(("started", sup.path), 2)
    assert system.tree(sup.path).restarts == 1
    assert system.tree(sup.path).last_failure == "RuntimeError: disk gone"


async def test_backoff_delays_the_restart(system: ActorSystem, rec: Recorder) -> None:
    strategy = SupervisorStrategy(max_restarts=3, backoff=Backoff(initial=0.2, maximum=1.0))
    sup = system.spawn(supervising(strategy), rec, name="sup")
    child = await sup.ask(Spawn(name="child"))
    loop = asyncio.get_running_loop()
    failed_at = loop.time()
    child.tell(Fail())
    await rec.count(("started", child.path), 2)
    assert loop.time() - failed_at >= 0.2
    assert Backoff(initial=0.2, maximum=1.0).delay(3) == 1.0


async def test_a_failure_in_started_is_supervised_like_any_other(
    system: ActorSystem, rec: Recorder
) -> None:
    attempts: list[int] = []

    class Fragile(Probe):
        async def started(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("first start fails")
            await super().started()

    fragile = system.spawn(Fragile, rec, name="fragile")
    await rec.count(("started", "/user/fragile"), 1)
    assert len(attempts) == 2
    assert await fragile.ask(Get()) == 0
    assert system.tree("/user/fragile").restarts == 1
