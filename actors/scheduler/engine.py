"""The scheduler's decision, in memory: filters, then weighers, over one datacenter's hosts.

Pure and synchronous (no I/O, no awaits), so the actor around it stays thin and tests need no
servers. The engine is a *view*: the store stays the truth, and its atomic claim is what prevents
overbooking. A stale view costs a refused claim and a refresh, never an overbooked host.

Speed: a full scan in Python costs about a microsecond per host, too slow at 10,000 hosts. The
engine keeps the schedulable hosts of its datacenter (ENABLED and HEALTHY) in a list sorted by free
memory (:func:`~actors.scheduler.weighers.index_key`), finds the first that fits the memory asked
with ``bisect`` and walks from the weigher's best end, running only the request filters (CPU,
affinity) on the hosts it passes, until it has ``candidates`` of them. Hosts rejected on the way are
few in practice: those short of CPUs but not of memory, and those holding the request's
anti-affinity group. Only a no-fit scans every host, to count the rejections of each filter.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping

import msgspec

from actors.scheduler.affinity import Policy
from actors.scheduler.filters import FILTERS, REQUEST_FILTERS
from actors.scheduler.hostview import HostView
from actors.scheduler.request import PlacementRequest
from actors.scheduler.weighers import IndexKey, Weigher, index_key, rank, walk
from cloudcore.errors import NoValidHost
from cloudcore.logging import get_logger
from cloudcore.store.records import Host, HostPower

__all__ = ["Explanation", "SchedulerEngine"]

_log = get_logger("actors.scheduler")

_NO_GROUP: Mapping[str, int] = {}


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    """What the filters did with every known host for one request.

    ``rejected`` maps every filter's name, in order, to the hosts it rejected first; ``passed``
    counts the hosts that passed them all.
    """

    rejected: dict[str, int]
    passed: int


class _Placement(msgspec.Struct, frozen=True):
    host_id: str
    cpus: int
    memory_mib: int
    group: str | None


class SchedulerEngine:
    """Hosts and group placements of one datacenter; picks hosts for placement requests.

    Feed it the datacenter's hosts (:meth:`upsert_host`, :meth:`remove_host`), the VMs already
    placed (:meth:`adopt`) and every claim and release as they happen (:meth:`claimed`,
    :meth:`released`); ask it with :meth:`select`. ``candidates`` is how many hosts
    :meth:`select` offers, so a caller whose first claim is refused can try the next one.
    """

    def __init__(
        self, datacenter_id: str, *, weigher: Weigher = Weigher.PACK, candidates: int = 3
    ) -> None:
        if candidates < 1:
            raise ValueError(f"candidates must be 1 or more, got {candidates}")
        self.datacenter_id = datacenter_id
        self.weigher = Weigher(weigher)
        self.candidates = candidates
        self._hosts: dict[str, HostView] = {}
        # Schedulable hosts of this datacenter, sorted by index_key; the key each sits under.
        self._index: list[IndexKey] = []
        self._keys: dict[str, IndexKey] = {}
        # group key -> host id -> number of the group's VMs on that host.
        self._groups: dict[str, dict[str, int]] = {}
        self._placements: dict[str, _Placement] = {}

    # -- the view ----------------------------------------------------------------------------

    def host(self, host_id: str) -> HostView | None:
        """The engine's view of a host, or None if it does not know it. Do not change it."""
        return self._hosts.get(host_id)

    def __len__(self) -> int:
        """How many hosts the engine knows, schedulable or not."""
        return len(self._hosts)

    def group_hosts(self, group: str) -> dict[str, int]:
        """Host id -> number of VMs of ``group`` on it, as far as the engine knows."""
        return dict(self._groups.get(group, _NO_GROUP))

    def upsert_host(self, host: Host) -> None:
        """Add a host or replace the view of one with ``host`` (claimed amounts included).

        A record older than the one held (lower ``version``) is ignored, so a late update
        cannot undo a newer one. Hosts of other datacenters are kept but never offered.
        """
        old = self._hosts.get(host.id)
        if old is not None and host.version < old.version:
            return
        self._unindex(host.id)
        view = self._hosts[host.id] = HostView(host)
        self._index_host(view)

    def remove_host(self, host_id: str) -> None:
        """Forget a host. Its VMs stay in their groups. Unknown hosts are ignored."""
        self._unindex(host_id)
        self._hosts.pop(host_id, None)

    def adopt(
        self, vm_id: str, host_id: str, cpus: int, memory_mib: int, group: str | None
    ) -> None:
        """Record a VM that is already on ``host_id`` and counted in the host's claimed amounts
        (as loaded from the store): only its group membership is new to the engine."""
        self._forget_placement(vm_id)
        self._add_placement(vm_id, _Placement(host_id, cpus, memory_mib, group))

    def claimed(
        self, host_id: str, cpus: int, memory_mib: int, vm_id: str, group: str | None
    ) -> None:
        """A VM was placed on ``host_id``: add its claim to the host and it to its group.

        Idempotent per ``vm_id``: a VM the engine already places somewhere is released there
        first.
        """
        self.released(vm_id)
        self._add_placement(vm_id, _Placement(host_id, cpus, memory_mib, group))
        self._change_use(host_id, cpus, memory_mib)

    def released(
        self,
        vm_id: str,
        host_id: str | None = None,
        cpus: int = 0,
        memory_mib: int = 0,
        group: str | None = None,
    ) -> None:
        """A VM left its host (unplaced, deleted, migrated away): give back its claim.

        The engine's own record of the VM wins; the other arguments describe a VM it does not
        know (placed by another scheduler instance). Releasing twice changes nothing the second
        time for a known VM; claimed amounts never go below zero.
        """
        placement = self._forget_placement(vm_id)
        if placement is None:
            if host_id is None:
                return
            placement = _Placement(host_id, cpus, memory_mib, group)
        self._change_use(placement.host_id, -placement.cpus, -placement.memory_mib)

    # -- the decision ------------------------------------------------------------------------

    def select(self, request: PlacementRequest, exclude: str | None = None) -> list[str]:
        """Up to ``candidates`` host ids that pass every filter for ``request``, best first,
        never ``exclude`` (the host a migrating VM leaves).

        Raises NoValidHost, whose ``explanation`` counts the hosts each filter rejected, when
        none passes. Does not claim anything: tell :meth:`claimed` once the store has.
        """
        if exclude is not None:
            return self._select_except(request, exclude)
        group_hosts = self._groups.get(request.group, _NO_GROUP) if request.group else _NO_GROUP
        if request.datacenter_id != self.datacenter_id:
            chosen: list[str] = []
        elif request.policy is Policy.AFFINITY and group_hosts:
            chosen = self._scan(request, group_hosts, self._known(group_hosts))
        else:
            chosen = self._walk(request, group_hosts)
        if chosen:
            return chosen
        # The slow path: count every filter's rejections; it also catches a stale index.
        chosen = self._scan(request, group_hosts, self._hosts.values())
        if chosen:
            _log.error("scheduler.index_mismatch", request=request.describe(), hosts=chosen)
            return chosen
        raise self._no_valid_host(request, group_hosts)

    def _select_except(self, request: PlacementRequest, exclude: str) -> list[str]:
        # One candidate more than asked, so leaving the excluded host out still offers enough.
        self.candidates += 1
        try:
            chosen = [h for h in self.select(request) if h != exclude]
        finally:
            self.candidates -= 1
        if not chosen:
            raise NoValidHost(
                f"no host other than {exclude} fits {request.describe()}",
                explanation=self.explain(request).rejected,
            )
        return chosen[: self.candidates]

    def standby_for(self, request: PlacementRequest) -> str | None:
        """The best host that is not powered ON (STANDBY or WAKING) but passes every other
        filter for ``request``: the one to wake for it. None if there is none."""
        group_hosts = self._groups.get(request.group, _NO_GROUP) if request.group else _NO_GROUP
        asleep = (
            host
            for host in self._hosts.values()
            if host.power is not HostPower.ON
            and all(f(host, request, group_hosts) for name, f in FILTERS if name != "power")
        )
        best = rank(self.weigher, asleep)
        return best[0].id if best else None

    def explain(self, request: PlacementRequest) -> Explanation:
        """How every filter treats every known host for ``request`` (a full scan)."""
        group_hosts = self._groups.get(request.group, _NO_GROUP) if request.group else _NO_GROUP
        rejected = dict.fromkeys((name for name, _ in FILTERS), 0)
        passed = 0
        for host in self._hosts.values():
            for name, passes in FILTERS:
                if not passes(host, request, group_hosts):
                    rejected[name] += 1
                    break
            else:
                passed += 1
        return Explanation(rejected=rejected, passed=passed)

    # -- internals ---------------------------------------------------------------------------

    def _walk(self, request: PlacementRequest, group_hosts: Mapping[str, int]) -> list[str]:
        chosen: list[str] = []
        hosts = self._hosts
        for host_id in walk(self.weigher, self._index, request.memory_mib):
            host = hosts[host_id]
            if all(passes(host, request, group_hosts) for passes in REQUEST_FILTERS):
                chosen.append(host_id)
                if len(chosen) == self.candidates:
                    break
        return chosen

    def _scan(
        self,
        request: PlacementRequest,
        group_hosts: Mapping[str, int],
        hosts: Iterable[HostView],
    ) -> list[str]:
        passing = (
            host
            for host in hosts
            if all(passes(host, request, group_hosts) for _, passes in FILTERS)
        )
        return [host.id for host in rank(self.weigher, passing)[: self.candidates]]

    def _known(self, host_ids: Iterable[str]) -> list[HostView]:
        return [self._hosts[h] for h in host_ids if h in self._hosts]

    def _no_valid_host(
        self, request: PlacementRequest, group_hosts: Mapping[str, int]
    ) -> NoValidHost:
        explanation = self.explain(request).rejected
        reasons = ", ".join(f"{name} rejected {n}" for name, n in explanation.items() if n)
        message = f"no host fits {request.describe()}: {reasons or 'no hosts known'}"
        _log.info("scheduler.no_valid_host", request=request.describe(), rejected=explanation)
        return NoValidHost(message, explanation=explanation)

    def _add_placement(self, vm_id: str, placement: _Placement) -> None:
        self._placements[vm_id] = placement
        if placement.group is not None:
            hosts = self._groups.setdefault(placement.group, {})
            hosts[placement.host_id] = hosts.get(placement.host_id, 0) + 1

    def _forget_placement(self, vm_id: str) -> _Placement | None:
        placement = self._placements.pop(vm_id, None)
        if placement is not None and placement.group is not None:
            hosts = self._groups[placement.group]
            left = hosts[placement.host_id] - 1
            if left:
                hosts[placement.host_id] = left
            else:
                del hosts[placement.host_id]
                if not hosts:
                    del self._groups[placement.group]
        return placement

    def _change_use(self, host_id: str, cpus: int, memory_mib: int) -> None:
        host = self._hosts.get(host_id)
        if host is None:
            return
        self._unindex(host_id)
        host.cpus_used = max(0, host.cpus_used + cpus)
        host.memory_mib_used = max(0, host.memory_mib_used + memory_mib)
        self._index_host(host)

    def _index_host(self, host: HostView) -> None:
        if host.schedulable and host.datacenter_id == self.datacenter_id:
            key = self._keys[host.id] = index_key(host)
            insort(self._index, key)

    def _unindex(self, host_id: str) -> None:
        key = self._keys.pop(host_id, None)
        if key is not None:
            del self._index[bisect_left(self._index, key)]
