"""A Thespian actor asks a cloudcore actor through the bridge.

    THESPIAN_BASE_IPADDR=127.0.0.1 python thespian_example.py NODE PATH

The bridge's cloudcore settings come from conf/default.toml and CLOUDCORE_<SECTION>__<KEY>
variables (CLOUDCORE_TRANSPORT__KIND=amqp, CLOUDCORE_NODE__ID=thespian-bridge, ...).
THESPIAN_BASE_IPADDR keeps Thespian's own sockets on loopback.
"""

import os
import sys
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ActorSystem

from cloudcore.cluster.thespian_bridge import (
    CloudcoreAsk,
    CloudcoreBridge,
    CloudcoreReply,
    JoinCluster,
)
from cloudcore.config import load_settings
from cloudcore.runtime import Message


class Hello(Message, frozen=True, kw_only=True, tag="example.Hello"):
    name: str


class Greeter(Actor):  # type: ignore[misc]
    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple):  # (bridge, node, path): ask that cloudcore actor
            bridge, node, path = message
            self.asker = sender
            self.send(bridge, CloudcoreAsk(node=node, path=path, message=Hello(name="thespian")))
        elif isinstance(message, CloudcoreReply):
            self.send(self.asker, message.result if message.error is None else message.text)


def main(node: str, path: str) -> None:
    port = int(os.environ.get("THESPIAN_ADMIN_PORT", "1900"))
    system = ActorSystem("multiprocTCPBase", {"Admin Port": port})
    try:
        bridge = system.createActor(CloudcoreBridge)
        joined = system.ask(bridge, JoinCluster(settings=load_settings()), 60)
        print("joined as", joined.result or joined.text, flush=True)
        greeter = system.createActor(Greeter)
        print(system.ask(greeter, (bridge, node, path), 30), flush=True)
        system.tell(bridge, ActorExitRequest())
    finally:
        system.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
