"""The Thespian bridge end to end: a real Thespian ``multiprocTCPBase`` system whose actors
ask and tell cloudcore actors by path through a CloudcoreBridge joined to the cluster, receive
cloudcore events, and are reached from cloudcore through a ref to their address."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from thespian.actors import ActorExitRequest, ActorSystem  # scripts/test installs [thespian]

from cloudcore.cluster import ClusterNode
from cloudcore.cluster.thespian_bridge import (
    CloudcoreBridge,
    CloudcoreExposed,
    CloudcoreReply,
    JoinCluster,
)
from cloudcore.config import EventsSettings, Settings
from cloudcore.events import open_event_bus
from cloudcore.runtime import Actor
from tests.integration.profiles.launcher import ROOT, Cluster
from tests.integration.profiles.thespian_actors import Caller, Echo, Echoed, Listener
from tests.integration.profiles.thespian_example import Hello
from tests.integration.state.servers import free_port
from tests.waiting import eventually

pytestmark = [
    pytest.mark.timeout(120),
    # Thespian's own handles leave their sockets for the garbage collector to close.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


class EchoActor(Actor[Echo]):
    """Answers an ask with Echoed; keeps what it is told."""

    def __init__(self, told: list[str]) -> None:
        self.told = told

    async def receive(self, message: Echo) -> Echoed:
        self.told.append(message.text)
        return Echoed(text=message.text, by=self.context.path)


@pytest.fixture
def thespian(monkeypatch: pytest.MonkeyPatch) -> Iterator[ActorSystem]:
    """A Thespian multiprocTCPBase system on loopback (its processes inherit the variable)."""
    monkeypatch.setenv("THESPIAN_BASE_IPADDR", "127.0.0.1")
    system = ActorSystem(
        "multiprocTCPBase",
        {"Admin Port": free_port()},
        logDefs={"version": 1, "disable_existing_loggers": False, "loggers": {}},
    )
    try:
        yield system
    finally:
        system.shutdown()


async def _ask(system: ActorSystem, target: Any, message: Any, timeout: float = 30) -> Any:
    return await asyncio.to_thread(system.ask, target, message, timeout)


async def test_thespian_actors_ask_tell_and_hear_cloudcore_and_are_reached_by_a_ref(
    cluster: Cluster, here: ClusterNode, thespian: ActorSystem
) -> None:
    told: list[str] = []
    here.system.spawn(EchoActor, told, name="echo")
    bridge = thespian.createActor(CloudcoreBridge)
    settings = {
        "node": {"id": "thespian-bridge"},
        "transport": {
            "kind": "amqp",
            "amqp_url": cluster.amqp_url,
            "exchange": cluster.tag,
            "reconnect_max_delay": 1.0,
        },
        "cluster": {"heartbeat_interval": 0.25, "node_timeout": 1.5},
        "events": {"backend": "redis", "redis_url": cluster.redis_url, "stream": cluster.stream},
    }
    joined = await _ask(thespian, bridge, JoinCluster(settings=settings), 60)
    assert joined == CloudcoreReply(result="thespian-bridge"), joined
    await here.wait_for_nodes(["thespian-bridge"], 10)
    caller = thespian.createActor(Caller)
    listener = thespian.createActor(Listener)
    try:
        # A Thespian actor asks a cloudcore actor by path, and tells it.
        reply = await _ask(
            thespian, caller, ("ask", bridge, "pytest", "/user/echo", Echo(text="hi"))
        )
        assert reply == CloudcoreReply(result=Echoed(text="hi", by="/user/echo")), reply
        missing = await _ask(
            thespian, caller, ("ask", bridge, "pytest", "/user/nobody", Echo(text="lost"))
        )
        assert missing.error is not None and missing.result is None, missing
        await _ask(thespian, caller, ("tell", bridge, "pytest", "/user/echo", Echo(text="told")))
        await eventually(lambda: "told" in told, timeout=10)

        # A cloudcore event reaches a subscribed Thespian actor.
        await _ask(thespian, listener, ("subscribe", bridge, ("bridge.tested",)))
        bus = await open_event_bus(
            Settings(
                events=EventsSettings(
                    backend="redis", redis_url=cluster.redis_url, stream=cluster.stream
                )
            )
        )
        try:

            async def heard() -> list[Any] | None:
                await bus.publish("bridge.tested", "test/1", data={"n": 1})
                seen = await _ask(thespian, listener, "collected")
                events = [e for e in seen if getattr(e, "type", "") == "bridge.tested"]
                return events or None

            events = await eventually(heard, timeout=20, interval=0.2)
        finally:
            await bus.close()
        assert events[0].subject == "test/1" and events[0].data == {"n": 1}

        # A cloudcore actor reaches the Thespian actor through a ref to its address.
        exposed = await _ask(thespian, listener, ("expose", bridge, "listener"))
        assert exposed == CloudcoreExposed(node="thespian-bridge", path="/user/thespian/listener")
        taken = await _ask(thespian, listener, ("expose", bridge, "listener"))
        assert isinstance(taken, CloudcoreReply) and taken.error is not None, taken
        here.ref(exposed.node, exposed.path).tell(Echo(text="from cloudcore"))

        async def reached() -> bool:
            return Echo(text="from cloudcore") in await _ask(thespian, listener, "collected")

        await eventually(reached, timeout=10)
    finally:
        thespian.tell(bridge, ActorExitRequest())


EXAMPLE = Path(__file__).with_name("thespian_example.py")
MARKER = "<!-- example: thespian-bridge -->"


def test_the_readme_shows_the_bridge_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "the README needs the marker before a ```python block"
    assert block.group(1) == EXAMPLE.read_text(encoding="utf-8")


class Welcome(Actor[Hello]):
    async def receive(self, message: Hello) -> str:
        return f"hello {message.name}"


async def test_the_readme_example_asks_a_cloudcore_actor(
    cluster: Cluster, here: ClusterNode
) -> None:
    here.system.spawn(Welcome, name="welcome")
    env = {
        **os.environ,
        "THESPIAN_BASE_IPADDR": "127.0.0.1",
        "THESPIAN_ADMIN_PORT": str(free_port()),
        "CLOUDCORE_NODE__ID": "thespian-bridge",
        "CLOUDCORE_TRANSPORT__KIND": "amqp",
        "CLOUDCORE_TRANSPORT__AMQP_URL": cluster.amqp_url,
        "CLOUDCORE_TRANSPORT__EXCHANGE": cluster.tag,
        "CLOUDCORE_LOG__FORMAT": "json",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(EXAMPLE), "pytest", "/user/welcome"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()  # the bridge's process logs there too
    assert "joined as thespian-bridge" in lines and lines[-1] == "hello thespian", done.stdout
