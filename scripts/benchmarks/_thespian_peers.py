"""The Thespian ping-pong pair both the runtime and the cluster suites measure as a peer.

Start it by asking the pinger ``(count, ponger)``; it answers ``"done"`` after ``count`` round
trips. Module level, so Thespian's multiprocess bases can load the classes by name.
"""

from __future__ import annotations

from typing import Any

from thespian.actors import Actor as TActor

__all__ = ["TPinger", "TPonger"]


class TPonger(TActor):  # type: ignore[misc]
    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, int):
            self.send(sender, message)


class TPinger(TActor):  # type: ignore[misc]
    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, tuple):
            self.left, self.peer = message
            self.origin = sender
            self.send(self.peer, 0)
        elif isinstance(message, int):
            self.left -= 1
            if self.left == 0:
                self.send(self.origin, "done")
            else:
                self.send(self.peer, message)
