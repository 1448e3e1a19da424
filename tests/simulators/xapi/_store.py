"""The XAPI simulator's object store: classes of records keyed by opaque refs, sessions, and the
change log that ``event.from`` reads.

Follows the xen-api data model where the driver touches it: every object has a ``uuid``; integer
fields travel as decimal strings (XAPI's int64 on XML-RPC); references are ``OpaqueRef:<uuid>``
and the null reference is ``OpaqueRef:NULL``. One re-entrant lock guards everything; a condition
on it wakes ``event.from`` waiters.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
import uuid as uuid_module
from typing import Any

NULL = "OpaqueRef:NULL"
CLASSES = (
    "pool",
    "host",
    "host_metrics",
    "SR",
    "VDI",
    "VBD",
    "VIF",
    "network",
    "VM",
    "task",
)


class XapiError(Exception):
    """A XAPI failure: ``ErrorDescription`` is ``[code, *params]``."""

    def __init__(self, code: str, *params: object) -> None:
        super().__init__(code, *params)
        self.description = [code, *(str(p) for p in params)]


def new_ref() -> str:
    return f"OpaqueRef:{uuid_module.uuid4()}"


class Store:
    """Records, sessions and the event log. Callers hold ``lock`` for multi-step changes."""

    def __init__(self, users: dict[str, str]) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.users = dict(users)
        self.sessions: dict[str, str] = {}
        self.tables: dict[str, dict[str, dict[str, Any]]] = {cls: {} for cls in CLASSES}
        self._log: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    # -- sessions ----------------------------------------------------------------------------

    def login(self, user: str, password: str) -> str:
        if self.users.get(user) != password:
            raise XapiError("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
        ref = new_ref()
        with self.lock:
            self.sessions[ref] = user
        return ref

    def check_session(self, ref: object) -> None:
        with self.lock:
            if not isinstance(ref, str) or ref not in self.sessions:
                raise XapiError("SESSION_INVALID", ref)

    def logout(self, ref: str) -> None:
        with self.lock:
            self.sessions.pop(ref, None)
            self.changed.notify_all()

    def expire_sessions(self) -> None:
        """Every session becomes invalid (as after a pool master restart)."""
        with self.lock:
            self.sessions.clear()
            self.changed.notify_all()

    # -- records -----------------------------------------------------------------------------

    def add(self, cls: str, record: dict[str, Any]) -> str:
        ref = new_ref()
        with self.lock:
            self.tables[cls][ref] = {"uuid": str(uuid_module.uuid4()), **record}
            self._note(cls, "add", ref)
        return ref

    def get(self, cls: str, ref: object) -> dict[str, Any]:
        """The live record (callers mutate it through ``update``); HANDLE_INVALID if absent."""
        record = self.tables[cls].get(ref) if isinstance(ref, str) else None
        if record is None:
            raise XapiError("HANDLE_INVALID", cls, ref)
        return record

    def update(self, cls: str, ref: str, **fields: Any) -> None:
        with self.lock:
            self.get(cls, ref).update(fields)
            self._note(cls, "mod", ref)

    def remove(self, cls: str, ref: str) -> None:
        with self.lock:
            self.get(cls, ref)
            del self.tables[cls][ref]
            self._note(cls, "del", ref)

    def find(self, cls: str, **match: Any) -> list[str]:
        with self.lock:
            return [
                ref
                for ref, rec in self.tables[cls].items()
                if all(rec.get(k) == v for k, v in match.items())
            ]

    # -- events ------------------------------------------------------------------------------

    def _note(self, cls: str, operation: str, ref: str) -> None:
        event: dict[str, Any] = {
            "id": f"{next(self._ids):020d}",
            "timestamp": f"{time.time():.6f}",
            "class": cls.lower(),
            "operation": operation,
            "ref": ref,
        }
        if operation != "del":  # XAPI sends no snapshot of a deleted object
            event["snapshot"] = copy.deepcopy(self.tables[cls][ref])
        self._log.append(event)
        self.changed.notify_all()

    def events_from(self, session: str, classes: list[str], token: str, timeout: float) -> Any:
        wanted = {c.lower() for c in classes}
        deadline = time.monotonic() + timeout
        with self.lock:
            if not token:
                return self._current(wanted)
            try:
                last = int(token)
            except ValueError:
                raise XapiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token) from None
            while True:
                self.check_session(session)
                events = [
                    e
                    for e in self._log
                    if int(e["id"]) > last and ("*" in wanted or e["class"] in wanted)
                ]
                remaining = deadline - time.monotonic()
                if events or remaining <= 0:
                    return {"events": events, "valid_ref_counts": {}, "token": self._token()}
                self.changed.wait(remaining)

    def _current(self, wanted: set[str]) -> dict[str, Any]:
        # An empty token: every current object of the classes, as "add" events.
        events = []
        for cls, table in self.tables.items():
            if "*" in wanted or cls.lower() in wanted:
                for ref, rec in table.items():
                    events.append(
                        {
                            "id": self._token(),
                            "timestamp": f"{time.time():.6f}",
                            "class": cls.lower(),
                            "operation": "add",
                            "ref": ref,
                            "snapshot": copy.deepcopy(rec),
                        }
                    )
        return {"events": events, "valid_ref_counts": {}, "token": self._token()}

    def _token(self) -> str:
        return self._log[-1]["id"] if self._log else f"{0:020d}"
