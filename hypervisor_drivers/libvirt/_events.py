"""libvirt's event loop, and domain lifecycle callbacks turned into LifecycleEvents.

Why not ``libvirtaio`` (libvirt's asyncio integration)? We tried it first; two things rule it out:

- libvirt-python accepts one event loop implementation per process, for the life of the process
  (a second ``virEventRegisterImpl`` raises "Event loop is already registered"), and libvirtaio
  binds itself to the asyncio loop it was registered on. Any other loop in the process (each
  pytest-asyncio test has its own; an embedding application may run several) never gets events.
- libvirt calls the event implementation from whichever thread makes the API call: the test
  driver arms its dispatch timer from the thread that starts a domain, the remote driver updates
  its socket watch from the thread that sends an RPC. Our blocking calls run in worker threads,
  so libvirtaio would create asyncio tasks and add readers from foreign threads, which asyncio
  does not support.

So we register libvirt's own default implementation (thread-safe in C; what ``virsh event`` uses)
once per process and run it in one daemon thread. Callbacks arrive on that thread; they only
read the domain's uuid and name (no RPC) and hand the event to the driver's ``EventHub``, which
reaches each subscriber's asyncio loop through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import libvirt
import structlog

from hypervisor_drivers.types import EventKind, GuestPower, LifecycleEvent

__all__ = ["LifecycleCallbacks", "ensure_event_loop"]

_log = structlog.get_logger("hypervisor_drivers.libvirt")
_lock = threading.Lock()
_thread: threading.Thread | None = None


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and start its thread, once per process. Must run
    before a connection is opened: libvirt wires a connection's events at open time."""
    global _thread
    with _lock:
        if _thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        _thread = threading.Thread(target=_run, name="libvirt-events", daemon=True)
        _thread.start()


def _run() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            _log.error("libvirt.event_loop_failed")


# libvirt event type -> (our kind, implied power state); details refine STOPPED and DEFINED.
_KINDS: dict[int, tuple[EventKind, GuestPower | None]] = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: (EventKind.DEFINED, None),
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: (EventKind.UNDEFINED, None),
    libvirt.VIR_DOMAIN_EVENT_STARTED: (EventKind.STARTED, GuestPower.RUNNING),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: (EventKind.PAUSED, GuestPower.PAUSED),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: (EventKind.RESUMED, GuestPower.RUNNING),
    libvirt.VIR_DOMAIN_EVENT_STOPPED: (EventKind.STOPPED, GuestPower.STOPPED),
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: (EventKind.SHUTTING_DOWN, None),
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: (EventKind.SUSPENDED, GuestPower.SUSPENDED),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: (EventKind.CRASHED, GuestPower.CRASHED),
}
_TYPE_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "DEFINED",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "UNDEFINED",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "STARTED",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "SUSPENDED",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "RESUMED",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "STOPPED",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "SHUTDOWN",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "PMSUSPENDED",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "CRASHED",
}


def _detail_names(type_name: str) -> dict[int, str]:
    prefix = f"VIR_DOMAIN_EVENT_{type_name}_"
    return {
        value: name[len(prefix) :].lower()
        for name, value in vars(libvirt).items()
        if name.startswith(prefix) and isinstance(value, int)
    }


_DETAILS = {event: _detail_names(name) for event, name in _TYPE_NAMES.items()}


def lifecycle_event(uuid: str, name: str, event: int, detail: int) -> LifecycleEvent:
    """The LifecycleEvent for a libvirt lifecycle callback's arguments."""
    kind, power = _KINDS.get(event, (EventKind.DEFINED, None))
    detail_name = _DETAILS.get(event, {}).get(detail, str(detail))
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED:
            kind, power = EventKind.SUSPENDED, GuestPower.SUSPENDED
        elif detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED:
            kind, power = EventKind.CRASHED, GuestPower.CRASHED
    elif event == libvirt.VIR_DOMAIN_EVENT_DEFINED and detail == (
        libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED
    ):
        power = GuestPower.STOPPED
    return LifecycleEvent(
        vm_uuid=uuid,
        vm_name=name,
        kind=kind,
        power=power,
        detail=detail_name,
        at=datetime.now(UTC),
    )


class LifecycleCallbacks:
    """The lifecycle callback of one connection, registered and deregistered with it."""

    def __init__(self, conn: Any, publish: Callable[[LifecycleEvent], None]) -> None:
        self._conn = conn
        self._publish = publish
        self._callback_id: int | None = None

    def register(self) -> None:
        """Blocking. Start receiving lifecycle events of every domain on the connection."""
        self._callback_id = self._conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )

    def deregister(self) -> None:
        """Blocking. Idempotent; never raises (the connection may be gone already)."""
        callback_id, self._callback_id = self._callback_id, None
        if callback_id is not None:
            try:
                self._conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError as exc:
                _log.debug("libvirt.event_deregister_failed", error=str(exc))

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        # Runs on the libvirt-events thread; an exception here would only be printed by libvirt.
        try:
            self._publish(lifecycle_event(dom.UUIDString(), dom.name(), event, detail))
        except Exception:
            _log.exception("libvirt.event_dropped", event=event, detail=detail)
