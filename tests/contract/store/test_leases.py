"""Leases on both stores: one holder at a time, a token that grows at every change of holder,
renewal only by the holder before expiry, release that lets the next one in."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudcore.store.base import Store
from cloudcore.store.records import Lease

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TTL = 10.0


async def test_a_free_lease_is_taken_with_token_one_and_refused_to_another_until_it_expires(
    store: Store,
) -> None:
    first = await store.acquire_lease("datacenter/dc1", "n1", "n1/a", TTL, at=T0)
    assert first is not None and (first.node, first.holder, first.token) == ("n1", "n1/a", 1)
    assert first.expires_at == T0 + timedelta(seconds=TTL)
    late = T0 + timedelta(seconds=TTL - 0.001)
    assert await store.acquire_lease("datacenter/dc1", "n2", "n2/a", TTL, at=late) is None
    taken = await store.acquire_lease("datacenter/dc1", "n2", "n2/a", TTL, at=first.expires_at)
    assert taken is not None and (taken.node, taken.token) == ("n2", 2)
    # The old holder's renewal fails: its lease is gone, whatever its clock says.
    assert await store.renew_lease(first, TTL, at=T0 + timedelta(seconds=1)) is None


async def test_renewal_extends_and_release_lets_the_next_holder_in_at_once(store: Store) -> None:
    lease = await store.acquire_lease("datacenter/dc1", "n1", "n1/a", TTL, at=T0)
    assert lease is not None
    renewed = await store.renew_lease(lease, TTL, at=T0 + timedelta(seconds=5))
    assert renewed is not None and renewed.expires_at == T0 + timedelta(seconds=15)
    at = T0 + timedelta(seconds=14)
    assert await store.acquire_lease("datacenter/dc1", "n2", "n2/a", TTL, at=at) is None
    await store.release_lease(renewed, at=at)
    assert await store.renew_lease(renewed, TTL, at=at) is None
    nxt = await store.acquire_lease("datacenter/dc1", "n2", "n2/a", TTL, at=at)
    assert nxt is not None and nxt.token == 2
    await store.release_lease(renewed, at=at)  # a stale release changes nothing
    assert [lease.holder for lease in await store.list_leases("datacenter/")] == ["n2/a"]


async def test_a_node_reclaims_at_once_the_unexpired_lease_of_its_own_ended_process(
    store: Store,
) -> None:
    dead = await store.acquire_lease("datacenter/dc1", "n1", "n1/s1/a", TTL, at=T0)
    assert dead is not None
    soon = T0 + timedelta(seconds=1)
    # Another node, another site of the same node, or a prefix with LIKE characters: refused.
    assert await store.acquire_lease("datacenter/dc1", "n2", "n2/s1/b", TTL, at=soon) is None
    for reclaim in ("n1/s2/", "n1/s_/", "n1/s%", "n2/s1/"):
        node = reclaim.split("/")[0]
        got = await store.acquire_lease(
            "datacenter/dc1", node, f"{reclaim}b", TTL, at=soon, reclaim=reclaim
        )
        assert got is None, reclaim
    # The node's own earlier process at the same site: taken now, a larger token.
    back = await store.acquire_lease(
        "datacenter/dc1", "n1", "n1/s1/b", TTL, at=soon, reclaim="n1/s1/"
    )
    assert back is not None and (back.holder, back.token) == ("n1/s1/b", 2)
    assert back.expires_at == soon + timedelta(seconds=TTL)
    assert await store.renew_lease(dead, TTL, at=soon) is None  # the old holder is fenced


async def test_leases_are_listed_by_prefix_with_like_characters_taken_literally(
    store: Store,
) -> None:
    for name in ("datacenter/dc_1", "datacenter/dcx1", "other/x"):
        assert await store.acquire_lease(name, "n1", "n1/a", TTL, at=T0) is not None
    assert [lease.name for lease in await store.list_leases("datacenter/dc_")] == [
        "datacenter/dc_1"
    ]
    assert len(await store.list_leases()) == 3


async def test_concurrent_acquirers_of_a_free_lease_get_one_winner(store: Store) -> None:
    name = f"datacenter/{secrets.token_hex(3)}"
    won = await asyncio.gather(
        *(store.acquire_lease(name, f"n{i}", f"n{i}/a", TTL) for i in range(8))
    )
    assert sum(lease is not None for lease in won) == 1


_STEP = st.tuples(
    st.sampled_from(["acquire", "renew", "release"]),
    st.integers(0, 2),  # which node
    st.floats(0, 8),  # seconds the clock moves first
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_STEP, min_size=1, max_size=30))
async def test_never_two_unexpired_holders_and_tokens_grow_with_each_holder(
    store: Store, steps: list[tuple[Any, ...]]
) -> None:
    name = f"datacenter/{secrets.token_hex(4)}"
    at = T0
    held: dict[int, Lease] = {}  # what each node believes it holds
    tokens: list[int] = []
    for action, node, advance in steps:
        at += timedelta(seconds=advance)
        lease = held.get(node)
        if action == "acquire":
            got = await store.acquire_lease(name, f"n{node}", f"n{node}/p", TTL, at=at)
            if got is not None:
                held[node] = got
                tokens.append(got.token)
        elif lease is not None and action == "renew":
            renewed = await store.renew_lease(lease, TTL, at=at)
            if renewed is None:
                del held[node]
            else:
                held[node] = renewed
        elif lease is not None:
            await store.release_lease(lease, at=at)
            del held[node]
        live = [lease for lease in held.values() if lease.expires_at > at]
        assert len(live) <= 1, live  # never two holders whose lease runs
        assert tokens == sorted(set(tokens))  # each new holder a larger token
    stored = await store.list_leases(name)
    assert len(stored) <= 1
    if tokens:
        assert stored[0].token == tokens[-1]
