"""Datacenter ownership by lease (actors.ownership) on both stores: two nodes for one
datacenter, exactly one runs it; a node cut off stops driving before the other takes over; a
node that stops hands over at the other's next round."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.ownership import DatacenterLeases
from cloudcore.store.base import Store
from tests.waiting import eventually, never

TTL = 1.0


class Timeline:
    """When each node ran and stopped the datacenter; fails on two runners at once."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.log: list[tuple[str, str]] = []
        #: (node, those running) at each start while others ran (the start then fails).
        self.overlaps: list[tuple[str, list[str]]] = []

    def keeper(
        self,
        store: Store,
        node: str,
        healthy: list[bool],
        site: str | None = None,
        stop_seconds: float = 0.0,
    ) -> DatacenterLeases:
        """``stop_seconds``: how long its datacenter's actors take to stop."""

        async def wanted() -> list[str]:
            return ["dc1"]

        async def run(dc: str) -> None:
            if self.running:
                self.overlaps.append((node, sorted(self.running)))
            assert not self.running, f"{node} runs {dc} while {self.running} does"
            self.running.add(node)
            self.log.append(("run", node))

        async def drop(dc: str) -> None:
            if stop_seconds and node in self.running:
                self.log.append(("stopping", node))
                await asyncio.sleep(stop_seconds)
            if node in self.running:
                self.running.discard(node)
                self.log.append(("drop", node))

        return DatacenterLeases(
            store,
            node,
            ttl=TTL,
            wanted=wanted,
            run=run,
            drop=drop,
            healthy=lambda: healthy[0],
            site=site,
        )

    async def crash(self, keeper: DatacenterLeases) -> None:
        """What ``kill -9`` leaves: the process drives nothing, its leases stay in the store."""
        assert keeper._loop_task is not None
        keeper._loop_task.cancel()
        for dc in keeper.owned:
            keeper._forget(dc)
        self.running.discard(keeper.node_id)
        self.log.append(("crash", keeper.node_id))


@pytest.fixture
async def two(store: Store) -> AsyncIterator[tuple[Timeline, list[DatacenterLeases], list[bool]]]:
    timeline = Timeline()
    health = [True]
    keepers = [timeline.keeper(store, "n1", health), timeline.keeper(store, "n2", [True])]
    try:
        yield timeline, keepers, health
    finally:
        for keeper in keepers:
            await keeper.stop()


async def test_two_nodes_for_one_datacenter_exactly_one_runs_it(two: tuple) -> None:
    timeline, (n1, n2), _ = two
    await asyncio.gather(n1.start(), n2.start())
    assert sorted(n1.owned + n2.owned) == ["dc1"]
    # Renewals go on: still one, and the same one.
    await never(lambda: len(timeline.log) != 1, within=TTL * 2)
    assert len(timeline.running) == 1


async def test_a_node_cut_off_stops_driving_before_the_other_takes_over(
    two: tuple, store: Store
) -> None:
    timeline, (n1, n2), health = two
    await n1.start()
    await n2.start()
    assert n1.owned == ["dc1"] and n2.owned == []
    first = (await store.list_leases("datacenter/dc1"))[0]
    health[0] = False  # n1 loses the broker: it renews nothing from now on
    await eventually(lambda: n2.owned == ["dc1"] or None, timeout=TTL * 4)
    assert timeline.log == [("run", "n1"), ("drop", "n1"), ("run", "n2")]
    taken = (await store.list_leases("datacenter/dc1"))[0]
    assert taken.token == first.token + 1 and taken.node == "n2"
    assert taken.acquired_at >= first.expires_at  # only once n1's lease had run out


async def test_a_node_that_stops_releases_and_the_other_takes_over_at_its_next_round(
    two: tuple,
) -> None:
    timeline, (n1, n2), _ = two
    await n1.start()
    await n2.start()
    stopped = asyncio.get_running_loop().time()
    await n1.stop()
    await eventually(lambda: n2.owned == ["dc1"] or None, timeout=TTL * 2)
    assert asyncio.get_running_loop().time() - stopped < TTL  # not after an expiry
    assert timeline.log == [("run", "n1"), ("drop", "n1"), ("run", "n2")]


async def test_a_node_restarted_at_its_site_takes_its_own_lease_back_at_once(store: Store) -> None:
    timeline = Timeline()
    first = timeline.keeper(store, "n1", [True], site="s1")
    await first.start()
    held = (await store.list_leases("datacenter/dc1"))[0]
    await timeline.crash(first)
    elsewhere = timeline.keeper(store, "n1", [True], site="s2")  # same id, another machine
    unsited = timeline.keeper(store, "n1", [True])  # its data directory was locked
    again = timeline.keeper(store, "n1", [True], site="s1")
    try:
        await elsewhere.start()
        await unsited.start()
        assert elsewhere.owned == unsited.owned == []  # those wait for the expiry
        await again.start()
        assert again.owned == ["dc1"]
        taken = (await store.list_leases("datacenter/dc1"))[0]
        assert taken.token == held.token + 1 and taken.acquired_at < held.expires_at
        assert timeline.log == [("run", "n1"), ("crash", "n1"), ("run", "n1")]
        # It keeps it: the others never run the datacenter, past the old expiry too.
        await never(lambda: len(timeline.log) != 3, within=TTL * 2)
    finally:
        for keeper in (again, elsewhere, unsited):
            await keeper.stop()


async def test_a_fenced_node_runs_its_datacenter_again_only_once_its_actors_stopped(
    store: Store,
) -> None:
    timeline = Timeline()
    health = [True]
    n1 = timeline.keeper(store, "n1", health, site="s1", stop_seconds=TTL)
    try:
        await n1.start()
        health[0] = False  # cut off: fenced, and its actors take a while to stop
        await eventually(lambda: ("stopping", "n1") in timeline.log or None, timeout=TTL * 2)
        health[0] = True  # back at once: its own lease is there to take back
        await eventually(lambda: len(timeline.log) >= 4 or None, timeout=TTL * 4)
        assert timeline.overlaps == []
        assert timeline.log == [("run", "n1"), ("stopping", "n1"), ("drop", "n1"), ("run", "n1")]
        assert n1.owned == ["dc1"]
    finally:
        await n1.stop()
