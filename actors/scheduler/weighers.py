"""The scheduler's weighers: in which order the hosts that pass the filters are offered.

- ``pack``: the host with the least free memory that still fits first, so hosts fill up one by
  one and whole hosts stay free for large VMs (or can be powered down).
- ``spread``: the host with the most free memory first, so load and failure impact spread out.

Ties go to the lower host id for ``pack`` and the higher for ``spread``: the order is total, so
the engine's indexed walk and its full scan agree host for host.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum

from actors.scheduler.hostview import HostView

__all__ = ["IndexKey", "Weigher", "index_key", "rank", "walk"]

#: The sort key of a host in the engine's index: (free memory in MiB, host id).
IndexKey = tuple[int, str]


class Weigher(StrEnum):
    """The placement strategy of a scheduler."""

    PACK = "pack"
    SPREAD = "spread"


def index_key(host: HostView) -> IndexKey:
    """Where ``host`` sits in the engine's index."""
    return (host.memory_mib - host.memory_mib_used, host.id)


def walk(weigher: Weigher, index: Sequence[IndexKey], memory_mib: int) -> Iterator[str]:
    """Host ids of a sorted ``index`` with at least ``memory_mib`` free, best first."""
    start = bisect_left(index, (memory_mib, ""))  # "" sorts before every id
    if weigher is Weigher.PACK:
        for i in range(start, len(index)):
            yield index[i][1]
    else:
        for i in range(len(index) - 1, start - 1, -1):
            yield index[i][1]


def rank(weigher: Weigher, hosts: Iterable[HostView]) -> list[HostView]:
    """``hosts`` best first: the order :func:`walk` gives, for hosts outside the index."""
    return sorted(hosts, key=index_key, reverse=weigher is Weigher.SPREAD)
