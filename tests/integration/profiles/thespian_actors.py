"""Thespian actors and cloudcore messages the bridge test uses. Module level, so Thespian's
multiprocess base finds the classes by name in its processes."""

from __future__ import annotations

from typing import Any

from thespian.actors import Actor as TActor

from cloudcore.cluster.thespian_bridge import (
    CloudcoreAsk,
    CloudcoreExpose,
    CloudcoreExposed,
    CloudcoreReply,
    CloudcoreSubscribe,
    CloudcoreTell,
)
from cloudcore.runtime import Message


class Echo(Message, frozen=True, kw_only=True, tag="test.Echo"):
    text: str


class Echoed(Message, frozen=True, kw_only=True, tag="test.Echoed"):
    text: str
    by: str


class Caller(TActor):  # type: ignore[misc]
    """("ask"|"tell", bridge, node, path, message): does it through the bridge; an ask's
    CloudcoreReply goes back to whoever asked."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple) and message[0] == "ask":
            _, bridge, node, path, msg = message
            self.requester = sender
            self.send(bridge, CloudcoreAsk(node=node, path=path, message=msg))
        elif isinstance(message, tuple) and message[0] == "tell":
            _, bridge, node, path, msg = message
            self.send(bridge, CloudcoreTell(node=node, path=path, message=msg))
            self.send(sender, "told")
        elif isinstance(message, CloudcoreReply):
            self.send(self.requester, message)


class Listener(TActor):  # type: ignore[misc]
    """("subscribe", bridge, types) and ("expose", bridge, name) through the bridge; keeps
    every event and cloudcore message it receives; "collected" answers them."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if not hasattr(self, "seen"):
            self.seen: list[Any] = []
            self.requester: Any = None
        if isinstance(message, tuple) and message[0] == "subscribe":
            self.send(message[1], CloudcoreSubscribe(types=message[2]))
            self.send(sender, "subscribed")
        elif isinstance(message, tuple) and message[0] == "expose":
            self.requester = sender
            self.send(message[1], CloudcoreExpose(name=message[2]))
        elif isinstance(message, CloudcoreExposed | CloudcoreReply) and self.requester:
            self.send(self.requester, message)  # the answer to an expose
            self.requester = None
        elif message == "collected":
            self.send(sender, list(self.seen))
        elif not isinstance(message, str):
            self.seen.append(message)
