"""Lifecycle event streams: one hub per driver, one bounded stream per subscriber.

A driver publishes from any thread (libvirt calls back on its own event thread); each stream
belongs to the asyncio loop that subscribed, and events reach it through that loop's
``call_soon_threadsafe``. A stream that falls behind drops its oldest events and counts them in
``dropped``: events are hints, a periodic sweep of ``list_vms`` is the truth.

Drivers whose hypervisor cannot push events run a :class:`PowerPoller`, which turns changes between
two ``list_vms`` sweeps into the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Final

import structlog

from hypervisor_drivers.types import EventKind, GuestPower, LifecycleEvent, VMInfo

__all__ = ["EventHub", "EventStream", "PowerPoller"]

_log = structlog.get_logger("hypervisor_drivers.events")

_CLOSED: Final = object()


class EventStream:
    """Lifecycle events for one subscriber: ``async with hub.subscribe() as events:
    async for event in events: ...``. Iteration ends when the stream or its driver is closed."""

    def __init__(self, hub: EventHub, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._hub = hub
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
        self._closed = False
        self.dropped = 0

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> LifecycleEvent:
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # later calls end too
            raise StopAsyncIteration
        assert isinstance(item, LifecycleEvent)
        return item

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving; iteration ends after the events already queued. Idempotent."""
        self._hub._remove(self)
        self._close_on_loop()

    def _offer(self, item: object) -> None:
        # Runs on the stream's loop.
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)
        if item is _CLOSED:
            self._closed = True

    def _deliver(self, item: object) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            self._loop.call_soon_threadsafe(self._offer, item)

    def _close_on_loop(self) -> None:
        self._deliver(_CLOSED)


class EventHub:
    """Fans events out to every open :class:`EventStream`. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: set[EventStream] = set()
        self._closed = False

    def subscribe(self, maxsize: int = 1024) -> EventStream:
        """A new stream on the running loop. On a closed hub the stream ends at once."""
        stream = EventStream(self, maxsize)
        with self._lock:
            closed = self._closed
            if not closed:
                self._streams.add(stream)
        if closed:
            stream._close_on_loop()
        return stream

    def publish(self, event: LifecycleEvent) -> None:
        """Queue ``event`` on every open stream. Callable from any thread."""
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream._deliver(event)

    def close(self) -> None:
        """End every stream; later subscriptions end at once. Idempotent."""
        with self._lock:
            self._closed = True
            streams, self._streams = self._streams, set()
        for stream in streams:
            stream._close_on_loop()

    def _remove(self, stream: EventStream) -> None:
        with self._lock:
            self._streams.discard(stream)


_POLLED_KIND = {
    GuestPower.PAUSED: EventKind.PAUSED,
    GuestPower.SUSPENDED: EventKind.SUSPENDED,
    GuestPower.STOPPED: EventKind.STOPPED,
    GuestPower.CRASHED: EventKind.CRASHED,
}


def _changes(before: dict[str, VMInfo], after: dict[str, VMInfo]) -> list[LifecycleEvent]:
    now = datetime.now(UTC)
    events = []
    for uuid, vm in after.items():
        old = before.get(uuid)
        if old is None:
            events.append(_polled(vm, EventKind.DEFINED, vm.power, now))
            if vm.power is GuestPower.STOPPED:
                continue
        elif old.power is vm.power:
            continue
        if vm.power is GuestPower.RUNNING:
            paused = old is not None and old.power is GuestPower.PAUSED
            kind = EventKind.RESUMED if paused else EventKind.STARTED
        else:
            kind = _POLLED_KIND.get(vm.power, EventKind.STOPPED)
        events.append(_polled(vm, kind, vm.power, now))
    for uuid, vm in before.items():
        if uuid not in after:
            events.append(_polled(vm, EventKind.UNDEFINED, None, now))
    return events


def _polled(vm: VMInfo, kind: EventKind, power: GuestPower | None, at: datetime) -> LifecycleEvent:
    return LifecycleEvent(
        vm_uuid=vm.uuid, vm_name=vm.name, kind=kind, power=power, detail="polled", at=at
    )


class PowerPoller:
    """Publishes the differences between successive ``list_vms`` sweeps as lifecycle events,
    for hypervisors that cannot push them. The first sweep sets the baseline silently. A failed
    sweep is logged and retried at the next interval."""

    def __init__(
        self,
        list_vms: Callable[[], Awaitable[list[VMInfo]]],
        hub: EventHub,
        interval: float = 2.0,
    ) -> None:
        self._list_vms = list_vms
        self._hub = hub
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the baseline sweep, then keep polling in a task. Idempotent."""
        if self._task is None:
            baseline = {vm.uuid: vm for vm in await self._list_vms()}
            self._task = asyncio.create_task(self._run(baseline), name="hypervisor-power-poller")

    async def stop(self) -> None:
        """Stop polling. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, seen: dict[str, VMInfo]) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                now = {vm.uuid: vm for vm in await self._list_vms()}
            except Exception as exc:  # the next sweep may work; the poller must not die
                _log.warning("hypervisor.poll_failed", error=str(exc))
                continue
            for event in _changes(seen, now):
                self._hub.publish(event)
            seen = now
