"""Lifecycle events from a vCenter PropertyCollector, watched in one daemon thread per driver.

The watcher creates its own collector with one filter: the power state and host of every VM on
the driver's ESXi host (through the host's ``vm`` property, so VMs created later enter it), and
long-polls ``WaitForUpdatesEx``. Changes become events: a VM entering is DEFINED (and STARTED if
it runs), a power change is STARTED/RESUMED/STOPPED/SUSPENDED, a VM leaving, or moving to another
host, is UNDEFINED. vcsim sends no ``leave`` for a VM relocated away; the ``runtime.host`` change
covers it.

When the wait fails (connection lost, collector gone) the watcher logs it and starts again with
a fresh collector after a pause; the new baseline is compared with what it knew, so what changed
meanwhile is still reported. It never dies of a VM destroyed under it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pyVmomi import vmodl

from hypervisor_drivers.types import EventKind, GuestPower, LifecycleEvent
from hypervisor_drivers.vsphere._inventory import host_vms_filter, vm_props
from hypervisor_drivers.vsphere._power import POWER

__all__ = ["Watcher"]

_log = structlog.get_logger("hypervisor_drivers.vsphere")
_WAIT_SECONDS = 1  # long-poll length: also how soon ``stop`` is noticed
_RETRY_SECONDS = 1.0


@dataclass
class _Seen:
    uuid: str
    name: str
    power: GuestPower
    host: Any


def _event(seen: _Seen, kind: EventKind, power: GuestPower | None, detail: str) -> LifecycleEvent:
    return LifecycleEvent(
        vm_uuid=seen.uuid,
        vm_name=seen.name,
        kind=kind,
        power=power,
        detail=detail,
        at=datetime.now(UTC),
    )


def _power_kind(before: GuestPower | None, after: GuestPower) -> EventKind:
    if after is GuestPower.RUNNING:
        return EventKind.RESUMED if before is GuestPower.SUSPENDED else EventKind.STARTED
    if after is GuestPower.SUSPENDED:
        return EventKind.SUSPENDED
    return EventKind.STOPPED


class Watcher:
    """Publishes the lifecycle events of the VMs on one host until ``stop``."""

    def __init__(self, content: Any, host: Any, publish: Callable[[LifecycleEvent], None]) -> None:
        self._content = content
        self._host = host
        self._publish = publish
        self._stop = threading.Event()
        self._seen: dict[str, _Seen] = {}  # by VM moref id
        self._collector: Any = None
        self._thread = threading.Thread(target=self._run, name="vsphere-events", daemon=True)
        self.ready = threading.Event()  # set once the first baseline is taken

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Blocking: ask the thread to stop and wait for it (at most one long poll)."""
        self._stop.set()
        collector = self._collector
        if collector is not None:
            with contextlib.suppress(Exception):
                collector.CancelWaitForUpdates()
        self._thread.join(timeout=_WAIT_SECONDS + 5)

    def _run(self) -> None:
        baseline = True
        while not self._stop.is_set():
            try:
                self._watch(baseline)
            except Exception as exc:  # the watcher must outlive a lost connection
                if self._stop.is_set():
                    break
                _log.warning("hypervisor.events_interrupted", error=f"{type(exc).__name__}: {exc}")
                self._stop.wait(_RETRY_SECONDS)
            finally:
                self._destroy_collector()
            baseline = False

    def _destroy_collector(self) -> None:
        collector, self._collector = self._collector, None
        if collector is not None:
            with contextlib.suppress(Exception):
                collector.DestroyPropertyCollector()

    def _watch(self, baseline: bool) -> None:
        self._collector = self._content.propertyCollector.CreatePropertyCollector()
        self._collector.CreateFilter(host_vms_filter(self._host), partialUpdates=True)
        options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=_WAIT_SECONDS)
        update = self._collector.WaitForUpdatesEx("", options)
        self._initial(update, baseline)
        version = update.version if update is not None else ""
        self.ready.set()
        while not self._stop.is_set():
            update = self._collector.WaitForUpdatesEx(version, options)
            if update is None:  # a quiet second: sweep for what the collector did not send
                self._reconcile(self._sweep(), "polled")
                continue
            version = update.version
            for filter_update in update.filterSet:
                for change in filter_update.objectSet:
                    self._apply(change)

    def _initial(self, update: Any, baseline: bool) -> None:
        """The first update lists every VM on the host: remember them silently the first time,
        report the differences after a restart."""
        before, self._seen = self._seen, {}
        for filter_update in update.filterSet if update is not None else []:
            for change in filter_update.objectSet:
                self._enter(change, announce=False)
        if not baseline:
            current, self._seen = self._seen, before
            self._reconcile(current, "resync")

    def _sweep(self) -> dict[str, _Seen]:
        """The VMs on the host now, read in one call (vcsim can keep a VM relocated away in
        the host's ``vm`` list: ``runtime.host`` decides)."""
        found = {}
        for props in vm_props(self._content, self._host):
            uuid = props.get("config.instanceUuid")
            if uuid and props.get("runtime.host") == self._host:
                power = POWER.get(str(props.get("runtime.powerState")), GuestPower.UNKNOWN)
                found[props["_ref"]._moId] = _Seen(uuid, props.get("name", ""), power, self._host)
        return found

    def _reconcile(self, current: dict[str, _Seen], detail: str) -> None:
        """Publish what differs between what the watcher knew and ``current``; keep ``current``."""
        before, self._seen = self._seen, current
        for moid, seen in current.items():
            old = before.get(moid)
            if old is None:
                self._announce_new(seen)
            elif old.power is not seen.power:
                kind = _power_kind(old.power, seen.power)
                self._publish(_event(seen, kind, seen.power, detail))
        for moid, old in before.items():
            if moid not in current:
                self._publish(_event(old, EventKind.UNDEFINED, None, detail))

    def _apply(self, change: Any) -> None:
        kind = str(change.kind)
        if kind == "enter":
            self._enter(change, announce=True)
        elif kind == "leave":
            seen = self._seen.pop(change.obj._moId, None)
            if seen is not None:
                self._publish(_event(seen, EventKind.UNDEFINED, None, "destroyed"))
        else:
            self._modify(change)

    def _enter(self, change: Any, *, announce: bool) -> None:
        """A VM entering the filter through the host's ``vm`` list. In the first update (the
        baseline) it counts only where ``runtime.host`` agrees (vcsim keeps a VM relocated away
        in the list). Later it was here, whatever ``runtime.host`` says by now: vcsim reads an
        entering VM's properties at the end of its batch, so a VM created, started and moved
        away between two waits enters with the host it moved to, followed by the batch's
        (older) changes. It is announced, and reported gone at once if it left."""
        props = {c.name: c.val for c in change.changeSet}
        uuid = props.get("config.instanceUuid")
        moid = change.obj._moId
        if not uuid:
            return
        here = props.get("runtime.host") == self._host
        if not announce:
            if here:
                self._seen[moid] = self._seen_from(uuid, props)
            return
        seen = self._seen.get(moid)
        if seen is None:
            seen = self._seen[moid] = self._seen_from(uuid, props)
            self._announce_new(seen)
        else:  # already found by a sweep: report only a power change since
            self._set_power(seen, self._seen_from(uuid, props).power, "added")
        if not here:
            gone = self._seen.pop(moid)
            self._publish(_event(gone, EventKind.UNDEFINED, None, "migrated"))

    def _seen_from(self, uuid: str, props: dict[str, Any]) -> _Seen:
        power = POWER.get(str(props.get("runtime.powerState")), GuestPower.UNKNOWN)
        return _Seen(uuid=uuid, name=props.get("name", ""), power=power, host=self._host)

    def _announce_new(self, seen: _Seen) -> None:
        self._publish(_event(seen, EventKind.DEFINED, GuestPower.STOPPED, "added"))
        if seen.power is not GuestPower.STOPPED:
            self._publish(_event(seen, _power_kind(None, seen.power), seen.power, "added"))

    def _modify(self, change: Any) -> None:
        seen = self._seen.get(change.obj._moId)
        if seen is None:
            # A VM that came to the host by a change (relocated here, with every property).
            if any(c.name == "runtime.host" and c.val == self._host for c in change.changeSet):
                self._enter(change, announce=True)
            return
        for prop in change.changeSet:
            if prop.name == "name" and prop.val:
                seen.name = prop.val
            elif prop.name == "runtime.host" and prop.val != self._host:
                del self._seen[change.obj._moId]
                self._publish(_event(seen, EventKind.UNDEFINED, None, "migrated"))
                return
            elif prop.name == "runtime.powerState":
                power = POWER.get(str(prop.val), GuestPower.UNKNOWN)
                self._set_power(seen, power, str(prop.val))

    def _set_power(self, seen: _Seen, power: GuestPower, detail: str) -> None:
        if power is not seen.power:
            kind = _power_kind(seen.power, power)
            seen.power = power
            self._publish(_event(seen, kind, power, detail))
