"""XAPI's change feed (``event.from`` with a token) turned into lifecycle events.

A watcher thread holds its own session (an ``XenAPI.Session`` is not for concurrent use) and
blocks in ``event.from`` for up to ``_WAIT`` seconds at a time. It keeps the last record of every
guest of its host, so a ``mod`` becomes STARTED/PAUSED/... by comparing power states, and a
``del`` (which carries no snapshot) can still name the VM. A VM that moves to another host reads
as UNDEFINED here. After an error (the pool master restarted, the connection dropped) the watcher
logs in again and takes a fresh token; events in between are lost, as the base spec allows.

After each reply the watcher waits ``extra["event_batch"]`` seconds (default 0.05) before asking
again, so a burst of changes (a start, its memory figures, a stop) is one reply instead of one
each: every reply carries full VM records, which cost the pool master and this process more than
the changes themselves. Events arrive up to that much later; none is lost (``event.from`` keeps
every change after the token).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from hypervisor_drivers.types import DriverSettings, EventKind, GuestPower, LifecycleEvent
from hypervisor_drivers.xenserver import _records as rec

__all__ = ["EventWatcher"]

_log = structlog.get_logger("hypervisor_drivers.xenserver")
_WAIT = 30.0  # seconds per event.from call; stop() aborts the call in progress
_RETRY = 1.0
_BATCH = "0.05"


def _kind(old: GuestPower | None, new: GuestPower) -> EventKind | None:
    if old is new:
        return None
    if new is GuestPower.RUNNING:
        return EventKind.RESUMED if old is GuestPower.PAUSED else EventKind.STARTED
    return {
        GuestPower.PAUSED: EventKind.PAUSED,
        GuestPower.SUSPENDED: EventKind.SUSPENDED,
        GuestPower.STOPPED: EventKind.STOPPED,
        GuestPower.CRASHED: EventKind.CRASHED,
    }.get(new)


class EventWatcher:
    """Publishes the lifecycle events of one host's guests until ``stop``."""

    def __init__(
        self,
        settings: DriverSettings,
        host: str,
        is_master: bool,
        publish: Callable[[LifecycleEvent], None],
    ) -> None:
        self._settings = settings
        self._host = host
        self._is_master = is_master
        self._publish = publish
        self._stopping = threading.Event()
        self._known: dict[str, tuple[str, str, GuestPower]] = {}  # ref -> uuid, name, power
        self._session: Any = None
        self._token = ""
        self._batch = float(settings.extra.get("event_batch", _BATCH))
        self._thread = threading.Thread(target=self._run, name="xapi-events", daemon=True)

    def start(self) -> None:
        """Log in and take the baseline (blocking), then watch in the thread."""
        self._resync()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        session = self._session
        if session is not None:
            session.transport.abort()
        self._thread.join(5)
        if session is not None and not self._thread.is_alive():
            session.transport.rearm()  # for the logout
        self._logout()

    def _logout(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.xenapi.session.logout()

    def _resync(self) -> None:
        self._logout()
        self._session = rec.open_session(self._settings, "cloudcore-events")
        baseline = getattr(self._session.xenapi.event, "from")(["vm"], "", 0.0)
        self._known = {}
        for event in baseline["events"]:
            snapshot = event.get("snapshot")
            if snapshot and rec.belongs_to(snapshot, self._host, self._is_master):
                self._known[event["ref"]] = self._facts(snapshot)
        self._token = str(baseline["token"])

    @staticmethod
    def _facts(record: dict[str, Any]) -> tuple[str, str, GuestPower]:
        return rec.vm_uuid(record), str(record.get("name_label", "")), rec.power(record)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._session is None:
                    self._resync()
                batch = getattr(self._session.xenapi.event, "from")(["vm"], self._token, _WAIT)
                self._token = str(batch["token"])
                for event in batch["events"]:
                    self._handle(event)
                self._stopping.wait(self._batch)  # let the next burst gather
            except Exception as exc:  # the watcher must outlive a lost pool master
                if self._stopping.is_set():
                    return
                _log.warning("hypervisor.events_lost", uri=self._settings.uri, error=repr(exc))
                self._session = None
                self._stopping.wait(_RETRY)

    def _handle(self, event: dict[str, Any]) -> None:
        ref = event.get("ref", "")
        snapshot = event.get("snapshot")
        before = self._known.get(ref)
        ours = isinstance(snapshot, dict) and rec.belongs_to(snapshot, self._host, self._is_master)
        if event.get("operation") == "del" or not ours:
            if before is not None:
                del self._known[ref]
                self._emit(before[0], before[1], EventKind.UNDEFINED, None, "removed")
            return
        assert snapshot is not None
        facts = self._facts(snapshot)
        self._known[ref] = facts
        uuid, name, power = facts
        if before is None:
            self._emit(uuid, name, EventKind.DEFINED, power, "added")
            if power is GuestPower.STOPPED:
                return
        kind = _kind(None if before is None else before[2], power)
        if kind is not None:
            self._emit(uuid, name, kind, power, f"power_state={snapshot.get('power_state')}")

    def _emit(
        self, uuid: str, name: str, kind: EventKind, power: GuestPower | None, detail: str
    ) -> None:
        self._publish(
            LifecycleEvent(
                vm_uuid=uuid,
                vm_name=name,
                kind=kind,
                power=power,
                detail=f"event.from: {detail}",
                at=datetime.now(UTC),
            )
        )
