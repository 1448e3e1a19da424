"""Failures against the real broker: kill -9 of a node under traffic, a broker restart under
traffic (on a private broker: the shared one is never stopped), and poison messages on a node's
queue."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from cloudcore.cluster import ClusterNode, MessageRegistry
from cloudcore.cluster.wire import TELL, Codec
from cloudcore.errors import TransportUnavailable
from cloudcore.runtime import ActorRef, Terminated
from cloudcore.transport.amqp._batcher import frame
from tests.integration.cluster.actors import (
    Command,
    Crash,
    Inbox,
    Members,
    Sleep,
    Sleeping,
    Total,
    Watcher,
    handled_ids,
)
from tests.integration.cluster.broker import PrivateBroker
from tests.integration.cluster.conftest import Nodes
from tests.integration.cluster.node_main import DELIVERY_LIMIT, TIMEOUT
from tests.waiting import eventually, never


class Traffic:
    """Persistent commands to one recorder, a few hundred a second, numbered from 0."""

    def __init__(self, recorder: ActorRef) -> None:
        self.recorder = recorder
        self.sent = 0
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()

    async def _run(self) -> None:
        while True:
            for _ in range(10):
                self.recorder.tell(Command(id=self.sent))
                self.sent += 1
            self._progress.set()
            await asyncio.sleep(0.02)  # the pace of the traffic, not a wait for anything

    async def until_sent(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` commands are sent; AssertionError if the traffic stalls first."""
        try:
            async with asyncio.timeout(timeout):
                while self.sent < count:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            raise AssertionError(f"traffic stalled at {self.sent} of {count} commands") from None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def traffic(recorder: ActorRef) -> AsyncIterator[Traffic]:
    flow = Traffic(recorder)
    flow.start()
    try:
        yield flow
    finally:
        if flow._task is not None and not flow._task.done():
            await flow.stop()


def assert_each_once(db: Path, sent: int, in_progress_at_kill: int | None = None) -> None:
    ids = handled_ids(str(db))
    twice = {i for i in ids if ids.count(i) > 1} if len(ids) != len(set(ids)) else set()
    allowed = {in_progress_at_kill} if in_progress_at_kill is not None else set()
    assert twice <= allowed, f"handled twice: {sorted(twice)}"
    assert sorted(set(ids)) == list(range(sent)), "a command was lost"


@pytest.mark.timeout(90)
async def test_kill_9_under_traffic(nodes: Nodes, here: ClusterNode, tmp_path: Path) -> None:
    await nodes.start("victim", datacenter="dc1")
    await nodes.start("observer", datacenter="dc2")
    await here.wait_for_nodes(["victim", "observer"], 10)
    db = tmp_path / "victim.sqlite"
    recorder = here.ref("victim", "/user/recorder")
    seen: asyncio.Queue[Terminated] = asyncio.Queue()
    here.spawn(Watcher, here.ref("victim", "/user/counter"), seen)

    async with traffic(recorder) as flow:
        await eventually(lambda: len(handled_ids(str(db))) >= 300, timeout=20)
        nodes.kill("victim")
        killed = time.monotonic()
        before_kill = handled_ids(str(db))

        terminated = await asyncio.wait_for(seen.get(), TIMEOUT + 3)
        noticed = time.monotonic() - killed
        assert terminated.reason == "node-down"
        assert terminated.actor.node == "victim"
        assert noticed <= TIMEOUT + 1.0, f"down noticed after {noticed:.2f} s"
        assert {m.node: m.status for m in here.members()}["victim"] == "down"
        probe = here.ref("observer", "/user/probe")
        await eventually(
            lambda: _down_at(probe), timeout=2.0
        )  # the other node process declared it down too

        sent_while_down = flow.sent
        await flow.until_sent(sent_while_down + 100)  # commands keep coming while it is down
        await flow.stop()

    await nodes.restart("victim")
    try:
        await eventually(lambda: len(set(handled_ids(str(db)))) >= flow.sent, timeout=30)
    except TimeoutError:
        ids = set(handled_ids(str(db)))
        missing = sorted(set(range(flow.sent)) - ids)
        raise AssertionError(
            f"{len(ids)} of {flow.sent} handled; missing {missing[:20]}..{missing[-5:]}\n"
            + "\n".join(x for x in nodes.log("victim").splitlines() if "joined" not in x)[-6000:]
        ) from None
    # What must not come: a late duplicate beyond the one command in progress at the kill.
    await never(lambda: len(handled_ids(str(db))) > flow.sent + 1, within=0.3)
    # The one command the recorder was inside of when it was killed may have written its row
    # without returning: it is redelivered and handled again (at-least-once). Every other
    # command — handled but not yet acknowledged, or sent while the node was down — is handled
    # exactly once.
    assert_each_once(db, flow.sent, in_progress_at_kill=before_kill[-1])


async def _down_at(probe: ActorRef) -> bool:
    view = await probe.ask(Members(), timeout=2)
    return bool(view.get("victim") == "down")


@pytest.mark.timeout(60)  # its own broker included: 43 s measured at a load of 8 on 2 cores
async def test_broker_restart_under_traffic(
    private_broker: PrivateBroker, nodes: Nodes, here: ClusterNode, tmp_path: Path
) -> None:
    await nodes.start("steady", datacenter="dc1")
    await here.wait_for_nodes(["steady"], 10)
    db = tmp_path / "steady.sqlite"
    counter = here.ref("steady", "/user/counter")
    try:
        async with traffic(here.ref("steady", "/user/recorder")) as flow:
            await eventually(lambda: len(handled_ids(str(db))) >= 200, timeout=20)
            started: asyncio.Queue[Sleeping] = asyncio.Queue()
            inbox = here.spawn(Inbox, started)
            in_flight = asyncio.ensure_future(
                counter.ask(Sleep(seconds=5, started=inbox), timeout=60)
            )
            sleeping = await asyncio.wait_for(started.get(), 10)
            assert sleeping.node == "steady"  # the ask is being handled on the other node

            await asyncio.to_thread(private_broker.stop_app)
            await eventually(lambda: not here.connected, timeout=10)
            refused_from = time.monotonic()
            with pytest.raises(TransportUnavailable):
                await in_flight  # failed when the connection dropped, not after 60 s
            with pytest.raises(TransportUnavailable):
                await counter.ask(Total(), timeout=30)  # refused at once while disconnected
            assert time.monotonic() - refused_from < 1.0
            await flow.until_sent(flow.sent + 100)  # tells go on while the broker is away
            sent_during_outage = flow.sent

            await asyncio.to_thread(private_broker.start_app)
            await eventually(lambda: here.connected, timeout=20)
            back = time.time()
            # the other node is back once we hear its heartbeats again
            await eventually(lambda: _heard_since(here, "steady", back), timeout=20)
            assert await counter.ask(Total(), timeout=10) == 0
            await flow.until_sent(sent_during_outage + 50)  # and go on once it is back
            await flow.stop()
    finally:  # a failed test's nodes leave more quickly with their broker up
        if not private_broker.accepts_connections():
            await asyncio.to_thread(private_broker.start_app)

    await eventually(lambda: len(set(handled_ids(str(db)))) >= flow.sent, timeout=30)
    # What must not come: a late duplicate.
    await never(lambda: len(handled_ids(str(db))) > flow.sent, within=0.3)
    assert_each_once(db, flow.sent)


def _heard_since(node: ClusterNode, other: str, since: float) -> bool:
    return any(m.node == other and m.last_heartbeat > since for m in node.members())


@pytest.mark.timeout(60)
async def test_poison_messages_are_dead_lettered_and_the_node_keeps_serving(
    nodes: Nodes, here: ClusterNode, amqp_url: str, exchange: str
) -> None:
    await nodes.start("target")
    await here.wait_for_nodes(["target"], 10)
    codec = Codec(MessageRegistry(), lambda node, path: here.ref(node, path))
    unknown = codec.encode(TELL, "intruder", 1, 1, "/user/counter", {"type": "Nope"}, "Nope")

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        x = await channel.get_exchange(exchange)
        await x.publish(aio_pika.Message(b"\xc1garbage"), routing_key="node.target")
        await x.publish(aio_pika.Message(frame([unknown])), routing_key="node.target")

        assert await here.ref("target", "/user/counter").ask(Total(), timeout=5) == 0

        dead = await channel.get_queue(f"{exchange}.dead-letters")
        letters: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def two_letters() -> bool:
            message = await dead.get(fail=False, no_ack=True)
            if message is not None:
                letters.append(message)
            return len(letters) >= 2

        await eventually(two_letters, timeout=10)
    bodies = {bytes(m.body): m for m in letters}
    assert b"\xc1garbage" in bodies  # rejected whole: the broker dead-lettered it
    assert "x-death" in (bodies[b"\xc1garbage"].headers or {})
    refused = next(m for m in letters if m.body != b"\xc1garbage")
    assert "unknown message type 'Nope'" in str((refused.headers or {})["x-cloudcore-reason"])
    log = nodes.log("target")
    assert "transport.batch_undecodable" in log
    assert "cluster.messages_refused" in log


@pytest.mark.timeout(90)
async def test_a_message_that_kills_its_node_is_dead_lettered_after_the_delivery_limit(
    nodes: Nodes, here: ClusterNode, amqp_url: str, exchange: str
) -> None:
    await nodes.start("fragile")
    await here.wait_for_nodes(["fragile"], 10)
    proc = nodes.procs.pop("fragile")
    here.ref("fragile", "/user/counter").tell(Crash())
    crashes = 0
    while True:  # the broker gives the poison back after every crash, up to its limit
        try:
            code = await asyncio.to_thread(proc.wait, 4)
        except subprocess.TimeoutExpired:
            break  # it survived: the poison is gone
        Nodes._close(proc)
        assert code == 3
        crashes += 1
        assert crashes <= DELIVERY_LIMIT + 1, "the poison message was never dead-lettered"
        proc = nodes._spawn("fragile", {})
    nodes.procs["fragile"] = proc
    assert crashes == DELIVERY_LIMIT + 1  # the first delivery and DELIVERY_LIMIT redeliveries
    assert await here.ref("fragile", "/user/counter").ask(Total(), timeout=10) == 0

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dead = await channel.get_queue(f"{exchange}.dead-letters")
        letter = await eventually(lambda: dead.get(fail=False, no_ack=True), timeout=10)
    deaths = (letter.headers or {})["x-death"]
    assert deaths[0]["reason"] == "delivery_limit"
