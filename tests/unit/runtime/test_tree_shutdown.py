"""Names, lookup, introspection and graceful shutdown."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from cloudcore.config import RuntimeSettings
from cloudcore.errors import ActorNameTaken, ActorStopped, NotFound
from cloudcore.runtime import ActorSystem

from .conftest import Recorder
from .messages import Child, Children, Fail, Get, Ping, Sleep, Spawn
from .probe import Probe


async def test_actors_have_hierarchical_paths_and_can_be_looked_up(
    system: ActorSystem, rec: Recorder
) -> None:
    dc = system.spawn(Probe, rec, name="dc")
    dc1 = await dc.ask(Spawn(name="dc1"))
    host = await dc1.ask(Spawn(name="h7"))
    assert host.path == "/user/dc/dc1/h7"
    assert system.lookup("/user/dc/dc1/h7") == host
    assert system.lookup("/user/dc/dc1/h7/") == host
    assert await dc1.ask(Child(name="h7")) == host
    assert await dc1.ask(Child(name="h8")) is None
    assert await dc.ask(Children()) == [dc1]
    with pytest.raises(NotFound, match="/user/dc/nope"):
        system.lookup("/user/dc/nope")
    with pytest.raises(LookupError):
        system.lookup("relative/path")


async def test_names_are_unique_among_siblings_and_validated(
    system: ActorSystem, rec: Recorder
) -> None:
    system.spawn(Probe, rec, name="x")
    with pytest.raises(ActorNameTaken, match="'x'"):
        system.spawn(Probe, rec, name="x")
    for bad in ("", "a/b", "$1"):
        with pytest.raises(ValueError, match="invalid actor name"):
            system.spawn(Probe, rec, name=bad)
    anonymous = {system.spawn(Probe, rec).path for _ in range(3)}
    assert len(anonymous) == 3


async def test_the_tree_is_plain_data_with_status_depth_counts_and_failures(
    system: ActorSystem, rec: Recorder
) -> None:
    parent = system.spawn(Probe, rec, name="parent")
    child = await parent.ask(Spawn(name="child"))
    child.tell(Ping(n=1))
    child.tell(Fail(reason="oops"))
    await rec.count(("started", "/user/parent/child"), 2)
    asyncio.get_running_loop().create_task(parent.ask(Sleep(seconds=0.1)))
    await rec.until(lambda items: ("sleeping", "/user/parent") in items)
    parent.tell(Ping(n=2))
    parent.tell(Ping(n=3))
    info = system.tree("/user/parent")
    assert (info.class_name, info.status, info.mailbox_depth) == ("Probe", "running", 2)
    (kid,) = info.children
    assert (kid.path, kid.processed, kid.restarts) == ("/user/parent/child", 2, 1)
    assert kid.last_failure == "RuntimeError: oops"
    as_json = msgspec.json.decode(msgspec.json.encode(system.tree()))
    assert as_json["children"][0]["path"] == "/user"
    assert [a.path for a in system.tree().walk()][:4] == [
        "/",
        "/user",
        "/user/parent",
        "/user/parent/child",
    ]


async def test_shutdown_stops_children_before_parents_after_draining_mailboxes(
    rec: Recorder,
) -> None:
    system = ActorSystem("n", RuntimeSettings(shutdown_timeout=5.0))
    root = system.spawn(Probe, rec, name="root")
    mid = await root.ask(Spawn(name="mid"))
    leaf = await mid.ask(Spawn(name="leaf"))
    for n in range(50):
        leaf.tell(Ping(n=n))
    await system.shutdown()
    assert sum(1 for i in rec.items if i[0] == "ping") == 50  # drained, not dropped
    order = [i[1] for i in rec.items if i[0] == "stopping"]
    assert order == ["/user/root/mid/leaf", "/user/root/mid", "/user/root"]
    assert system.is_terminated
    with pytest.raises(ActorStopped):
        await root.ask(Get())


async def test_shutdown_past_its_deadline_sends_what_is_left_to_dead_letters(
    rec: Recorder,
) -> None:
    system = ActorSystem("n", RuntimeSettings(shutdown_timeout=5.0))
    stuck = system.spawn(Probe, rec, name="stuck")
    pending = asyncio.get_running_loop().create_task(stuck.ask(Sleep(seconds=30), timeout=60))
    await rec.until(lambda items: ("sleeping", "/user/stuck") in items)
    for n in range(5):
        stuck.tell(Ping(n=n))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await system.shutdown(timeout=0.2)
    assert loop.time() - start < 2.0
    letters = system.dead_letters.recent()
    assert [d.message for d in letters] == [Ping(n=n) for n in range(5)]
    with pytest.raises(ActorStopped):
        await pending
    assert system.is_terminated


async def test_spawning_on_a_shut_down_system_is_refused(rec: Recorder) -> None:
    system = ActorSystem("n")
    await system.shutdown()
    with pytest.raises(ActorStopped):
        system.spawn(Probe, rec)


async def test_the_system_spawns_under_and_stops_an_actor_by_path(
    system: ActorSystem, rec: Recorder
) -> None:
    system.spawn(Probe, rec, name="dc")
    dc1 = system.spawn_under("/user/dc", Probe, rec, name="dc1")
    assert (dc1.path, dc1.name) == ("/user/dc/dc1", "dc1")
    assert await dc1.ask(Ping(n=1)) == 1
    with pytest.raises(NotFound):
        system.spawn_under("/user/nope", Probe, rec, name="x")
    system.stop("/user/dc/dc1")
    await dc1.stopped()
    assert system.tree("/user/dc").children == ()
    with pytest.raises(NotFound):
        system.stop("/user/dc/dc1")
