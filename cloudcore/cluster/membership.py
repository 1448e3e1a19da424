"""Who is in the cluster: heartbeats, join and leave, and failure detection by timeout.

Every node broadcasts a Heartbeat each ``heartbeat_interval``; the first one a node hears from
another is that node's join, and a node answers a join with a heartbeat of its own at once so
the newcomer learns the view without waiting. A node silent for ``node_timeout`` is declared
down; a node that says it is leaving is marked left. A node back with a new incarnation (it
restarted) is first declared down, then up again.

While this node is itself disconnected from the broker it hears nobody, so it suspends
judgement, and on reconnection it gives every node a fresh ``node_timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from cloudcore.cluster._protocol import Heartbeat
from cloudcore.logging import get_logger

__all__ = ["Member", "Membership"]

_log = get_logger("cloudcore.cluster")

Status = Literal["up", "down", "left"]


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """One node as this node sees it. Encodes to JSON as it stands (for the console)."""

    node: str
    status: Status
    capabilities: dict[str, str]
    kinds: list[str]
    incarnation: int
    last_heartbeat: float  # time.time() of the last heartbeat heard
    since: float  # time.time() of the last status change
    started_at: float = 0.0  # time.time() when the node started
    info: dict[str, str] = {}  # what it said of itself in its last heartbeat


class _Entry:
    __slots__ = ("heard_at", "member")

    def __init__(self, member: Member, heard_at: float) -> None:
        self.member = member
        self.heard_at = heard_at  # loop.time()


class Membership:
    """The cluster view of one node. Callbacks run on the event loop."""

    def __init__(
        self,
        me: Heartbeat,
        *,
        interval: float,
        timeout: float,
        send: Callable[[Heartbeat], None],
        on_down: Callable[[str, str], None],
    ) -> None:
        self._me = me
        self._interval = interval
        self._timeout = timeout
        self._send = send
        self._on_down = on_down
        self._members: dict[str, _Entry] = {}
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._connected = False
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ queries

    def view(self) -> list[Member]:
        """Every node heard of since start, sorted by node id."""
        return [self._members[n].member for n in sorted(self._members)]

    def status(self, node: str) -> Status | None:
        entry = self._members.get(node)
        return entry.member.status if entry else None

    def up(self) -> list[Member]:
        return [m for m in self.view() if m.status == "up"]

    def next_change(self) -> asyncio.Event:
        """An event set at the next change of the view (cleared now: check, then wait)."""
        self._changed.clear()
        return self._changed

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connected:
            self._send(msgspec.structs.replace(self._me, leaving=True))

    def connection(self, connected: bool) -> None:
        self._connected = connected
        if connected:
            now = self._loop.time()
            for entry in self._members.values():
                entry.heard_at = now
            self._send(self._me)

    # ------------------------------------------------------------------ events

    def heard(self, beat: Heartbeat) -> None:
        entry = self._members.get(beat.node)
        now_wall = time.time()
        if beat.leaving:
            if entry is not None and entry.member.incarnation == beat.incarnation:
                self._set(entry, "left", now_wall)
                _log.info("cluster.node_left", node=beat.node)
                self._on_down(beat.node, "node-left")
            return
        if entry is not None and entry.member.incarnation == beat.incarnation:
            entry.heard_at = self._loop.time()
            member = entry.member
            if member.status == "up":
                entry.member = msgspec.structs.replace(
                    member, last_heartbeat=now_wall, info=dict(beat.info)
                )
                return
        elif entry is not None and entry.member.status == "up":
            # Back with a new incarnation before the timeout: the old one's actors are gone.
            _log.warning("cluster.node_restarted", node=beat.node)
            self._on_down(beat.node, "node-down")
        self._members[beat.node] = _Entry(
            Member(
                node=beat.node,
                status="up",
                capabilities=dict(beat.capabilities),
                kinds=list(beat.kinds),
                incarnation=beat.incarnation,
                last_heartbeat=now_wall,
                since=now_wall,
                started_at=beat.started_at,
                info=dict(beat.info),
            ),
            self._loop.time(),
        )
        self._changed.set()
        _log.info("cluster.node_joined", node=beat.node, capabilities=beat.capabilities)
        if beat.node != self._me.node:
            self._send(self._me)  # let the newcomer know us now, not an interval later

    def _set(self, entry: _Entry, status: Status, at: float) -> None:
        entry.member = msgspec.structs.replace(entry.member, status=status, since=at)
        self._changed.set()

    def _tick(self, beat: bool = True) -> None:
        # Detection runs twice per interval, a heartbeat goes out every other run.
        if self._connected:
            if beat:
                self._send(self._me)
            deadline = self._loop.time() - self._timeout
            for node, entry in list(self._members.items()):
                if node == self._me.node or entry.member.status != "up":
                    continue
                if entry.heard_at < deadline:
                    self._set(entry, "down", time.time())
                    _log.warning("cluster.node_down", node=node, silent_for=self._timeout)
                    self._on_down(node, "node-down")
        self._timer = self._loop.call_later(self._interval / 2, self._tick, not beat)
