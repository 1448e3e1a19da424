"""Death watch and timers."""

from __future__ import annotations

from typing import Any

from cloudcore.runtime import Actor, ActorSystem, Directive, SupervisorStrategy
from tests.clock import LoopClock
from tests.waiting import eventually

from .conftest import Recorder
from .messages import Cancel, Every, Fail, Get, Once, Ping, Spawn, Unwatch, Watch
from .probe import Probe, supervising


def terminations(items: list[Any]) -> list[tuple[str, str]]:
    return [(i[1], i[2]) for i in items if i[0] == "terminated"]


async def test_a_watcher_gets_terminated_with_the_reason_when_the_actor_stops(
    system: ActorSystem, rec: Recorder
) -> None:
    watcher = system.spawn(Probe, rec, name="watcher")
    target = system.spawn(Probe, rec, name="target")
    await watcher.ask(Watch(ref=target))
    target.stop()
    await rec.until(lambda items: terminations(items) == [("/user/target", "stopped")])


async def test_watching_an_actor_that_is_already_dead_delivers_terminated_at_once(
    system: ActorSystem, rec: Recorder
) -> None:
    watcher = system.spawn(Probe, rec, name="watcher")
    target = system.spawn(Probe, rec, name="target")
    target.stop()
    await target.stopped()
    await watcher.ask(Watch(ref=target))
    await rec.until(lambda items: terminations(items) == [("/user/target", "stopped")])


async def test_unwatch_stops_the_notification(system: ActorSystem, rec: Recorder) -> None:
    watcher = system.spawn(Probe, rec, name="watcher")
    target = system.spawn(Probe, rec, name="target")
    await watcher.ask(Watch(ref=target))
    await watcher.ask(Unwatch(ref=target))
    target.stop()
    await target.stopped()
    watcher.tell(Ping(n=1))  # anything queued before this would have been handled first
    assert await watcher.ask(Get()) == 1
    assert terminations(rec.items) == []


async def test_a_child_stopped_by_its_supervisor_reports_the_failure(
    system: ActorSystem, rec: Recorder
) -> None:
    sup = system.spawn(
        supervising(SupervisorStrategy(decider=lambda e: Directive.STOP)), rec, name="sup"
    )
    child = await sup.ask(Spawn(name="child"))
    await sup.ask(Watch(ref=child))
    child.tell(Fail(reason="disk full"))
    await rec.until(
        lambda items: terminations(items) == [(child.path, "failed: RuntimeError: disk full")]
    )


class Tick(Ping, frozen=True, kw_only=True):
    pass


class Clock(Actor[Any]):
    """Counts timer ticks; messages start and cancel timers through the context."""

    def __init__(self, record: Any) -> None:
        self.record = record
        self.ticks = 0

    async def receive(self, message: Any) -> Any:
        match message:
            case Tick(n=n):
                self.ticks += 1
                self.record(("tick", n))
            case Get():
                return self.ticks
            case Fail():
                raise RuntimeError("clock broke")
            case Once(key=key, delay=delay, message=tick):
                self.context.schedule_once(key, delay, tick)
            case Every(key=key, interval=interval, message=tick):
                self.context.schedule_periodic(key, interval, tick)
            case Cancel(key=key):
                return self.context.cancel_timer(key)
        return None


async def test_a_one_shot_timer_fires_once(
    system: ActorSystem, rec: Recorder, loop_clock: LoopClock
) -> None:
    clock = system.spawn(Clock, rec)
    await clock.ask(Once(key="once", delay=0.01, message=Tick(n=1)))
    await rec.count(("tick", 1))
    await loop_clock.advance(0.05)  # five periods on: a wrongly repeating timer fired again
    assert await clock.ask(Get()) == 1


async def test_a_periodic_timer_repeats_until_cancelled(
    system: ActorSystem, rec: Recorder, loop_clock: LoopClock
) -> None:
    clock = system.spawn(Clock, rec)
    await clock.ask(Every(key="beat", interval=0.01, message=Tick(n=2)))
    await rec.count(("tick", 2), 3)
    assert await clock.ask(Cancel(key="beat")) is True
    seen = await clock.ask(Get())
    await loop_clock.advance(0.05)  # five periods on: a timer not cancelled would have ticked
    assert await clock.ask(Get()) == seen
    assert await clock.ask(Cancel(key="beat")) is False


async def test_timers_are_cancelled_when_the_actor_restarts(
    system: ActorSystem, rec: Recorder, loop_clock: LoopClock
) -> None:
    clock = system.spawn(Clock, rec)
    await clock.ask(Every(key="beat", interval=0.01, message=Tick(n=3)))
    await rec.count(("tick", 3), 1)
    clock.tell(Fail())
    await eventually(lambda: system.tree(clock.path).restarts == 1)
    await loop_clock.advance(0.05)  # five periods on: a timer not cancelled would have ticked
    assert await clock.ask(Get()) == 0


async def test_timers_are_cancelled_when_the_actor_stops(
    system: ActorSystem, rec: Recorder, loop_clock: LoopClock
) -> None:
    clock = system.spawn(Clock, rec)
    await clock.ask(Every(key="beat", interval=0.01, message=Tick(n=4)))
    await rec.count(("tick", 4), 1)
    clock.stop()
    await clock.stopped()
    before = system.dead_letters.count
    await loop_clock.advance(0.05)  # five periods on: a timer not cancelled would have sent
    assert system.dead_letters.count == before  # no tick was sent to the stopped actor
