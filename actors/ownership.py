"""Which node runs a datacenter: the holder of its lease in the store (``datacenter/<id>``).

A node takes the lease of each datacenter it may run when the lease is free (at start, and when
a dead or fenced peer's lease expires), runs the datacenter's actors while it holds it, renews
it every quarter of ``ttl``, and gives it up on shutdown (its actors stopped first, then the
lease released, so a peer takes over at its next round).

Fencing: a holder that could not renew for three quarters of ``ttl`` — the store is unreachable,
or it is cut from the broker (``healthy`` says False) and so from the operations routed to it —
stops the datacenter's actors by itself. The clock of that deadline starts before the renewal
that set it is sent, and the store's expiry is ``ttl`` after that renewal arrived: the old
holder has stopped driving a quarter of ``ttl`` before any other node can take the lease. Never
two owners, provided the nodes' clocks agree (NTP) to well under that margin.

A restart of the same node (``kill -9``, a crash, then the service manager starts it again)
takes its own leases back at once instead of waiting them out, when it knows that the process
which held them has ended: the node passes a ``site`` only while it holds the exclusive lock of
its data directory (see :mod:`cloudcore.app.node`), and every holder name carries the site, so a
lease held under ``<node>/<site>/`` was taken by a process that had this lock and is therefore
gone (the kernel frees the lock when a process dies, however it dies). A dead process drives
nothing; the larger token it gets still fences anything of the old holder in flight. Another
node with the same id elsewhere (another site) waits for expiry as any peer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from cloudcore.errors import BackendUnavailable, describe
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import Lease

__all__ = ["PREFIX", "DatacenterLeases", "lease_name"]

_log = get_logger("actors.ownership")

#: Lease names of datacenters start with this.
PREFIX = "datacenter/"
#: Renewals per ``ttl``; without one for FENCE_AFTER x ``ttl`` the holder stops by itself.
RENEWALS = 4
FENCE_AFTER = 0.75


def lease_name(datacenter_id: str) -> str:
    return PREFIX + datacenter_id


@dataclass(slots=True)
class _Held:
    lease: Lease
    fence: asyncio.TimerHandle | None = None
    fence_at: float = 0.0


class DatacenterLeases:
    """The leases of the datacenters one node may run.

    ``wanted()`` names the datacenters this node may run now (those in the store it is meant
    for); ``run(id)`` starts a datacenter's actors once its lease is taken, ``drop(id)`` stops
    them (on loss, fencing and shutdown); ``healthy()`` is False while the node cannot take the
    operations routed to it (cut from the broker): it then renews nothing and takes nothing.
    """

    def __init__(
        self,
        store: Store,
        node_id: str,
        *,
        ttl: float,
        wanted: Callable[[], Awaitable[Iterable[str]]],
        run: Callable[[str], Awaitable[None]],
        drop: Callable[[str], Awaitable[None]],
        healthy: Callable[[], bool] = lambda: True,
        site: str | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        #: This process: a restarted node is another holder. With a ``site`` (no other process
        #: of this node runs there now), it takes back the leases of the node's earlier
        #: processes at that site at once; without, it waits for them to expire.
        self.holder = f"{node_id}/{site or '-'}/{secrets.token_hex(4)}"
        self._reclaim = None if site is None else f"{node_id}/{site}/"
        self.ttl = ttl
        self._wanted, self._run, self._drop, self._healthy = wanted, run, drop, healthy
        self._held: dict[str, _Held] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._drops: dict[str, asyncio.Task[None]] = {}  # fenced datacenters being stopped
        self._lock = asyncio.Lock()
        self._was_healthy = True

    @property
    def owned(self) -> list[str]:
        """The datacenters this node holds the lease of, by id."""
        return sorted(self._held)

    async def start(self) -> None:
        """Take the free leases now (the node starts with its datacenters), then keep them."""
        await self._round()
        self._loop_task = asyncio.create_task(self._keep(), name=f"leases-{self.node_id}")

    async def claim(self, datacenter_id: str) -> bool:
        """Take the lease of ``datacenter_id`` now if it is free (a datacenter just added);
        True if this node runs it."""
        async with self._lock:
            if datacenter_id not in self._held:
                await self._acquire(datacenter_id)
        return datacenter_id in self._held

    async def stop(self) -> None:
        """Stop every datacenter's actors, then release their leases."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        async with self._lock:
            for dc, held in list(self._held.items()):
                self._forget(dc)
                await self._drop(dc)
                try:
                    await self.store.release_lease(held.lease)
                except BackendUnavailable as exc:  # it expires on its own
                    _log.warning("lease.release_failed", datacenter=dc, error=describe(exc))
                _log.info("lease.released", datacenter=dc, node=self.node_id)
        if self._drops:
            await asyncio.gather(*self._drops.values(), return_exceptions=True)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / RENEWALS)
            try:
                await self._round()
            except Exception as exc:  # the next round tries again; the fences still fire
                _log.warning("lease.round_failed", node=self.node_id, error=describe(exc))

    async def _round(self) -> None:
        healthy = self._healthy()
        if healthy != self._was_healthy:
            _log.warning("lease.health", node=self.node_id, healthy=healthy)
            self._was_healthy = healthy
        if not healthy:
            return  # no renewal: the fences stop the datacenters before the leases expire
        async with self._lock:
            for dc, held in list(self._held.items()):
                await self._renew(dc, held)
            for dc in sorted(set(await self._wanted())):
                if dc not in self._held:
                    await self._acquire(dc)

    async def _renew(self, dc: str, held: _Held) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            async with asyncio.timeout(max(0.01, held.fence_at - sent)):
                renewed = await self.store.renew_lease(held.lease, self.ttl)
        except (BackendUnavailable, TimeoutError) as exc:
            _log.warning("lease.renew_failed", datacenter=dc, error=describe(exc))
            return  # again next round; the fence fires if it lasts
        if self._held.get(dc) is not held:
            return  # fenced meanwhile
        if renewed is None:
            _log.error("lease.lost", datacenter=dc, node=self.node_id)
            self._forget(dc)
            await self._drop(dc)
            return
        held.lease = renewed
        self._arm(dc, held, sent)

    async def _acquire(self, dc: str) -> None:
        if dc in self._drops:
            return  # fenced, its actors still stopping: taken again at a round after they end
        sent = asyncio.get_running_loop().time()
        lease = await self.store.acquire_lease(
            lease_name(dc), self.node_id, self.holder, self.ttl, reclaim=self._reclaim
        )
        if lease is None:
            return
        held = self._held[dc] = _Held(lease)
        self._arm(dc, held, sent)
        _log.info("lease.acquired", datacenter=dc, node=self.node_id, token=lease.token)
        try:
            await self._run(dc)
        except Exception as exc:
            _log.error("datacenter.start_failed", datacenter=dc, error=describe(exc))
            self._forget(dc)
            await self._drop(dc)
            await self.store.release_lease(lease)

    def _arm(self, dc: str, held: _Held, sent: float) -> None:
        if held.fence is not None:
            held.fence.cancel()
        held.fence_at = sent + self.ttl * FENCE_AFTER
        held.fence = asyncio.get_running_loop().call_at(held.fence_at, self._fenced, dc, held)

    def _fenced(self, dc: str, held: _Held) -> None:
        if self._held.get(dc) is not held:
            return
        _log.error("lease.fenced", datacenter=dc, node=self.node_id, token=held.lease.token)
        self._forget(dc)
        task = asyncio.create_task(self._stop_fenced(dc), name=f"fence-{dc}")
        self._drops[dc] = task
        task.add_done_callback(lambda _: self._drops.pop(dc, None))

    async def _stop_fenced(self, dc: str) -> None:
        await self._drop(dc)

    def _forget(self, dc: str) -> None:
        held = self._held.pop(dc, None)
        if held is not None and held.fence is not None:
            held.fence.cancel()
