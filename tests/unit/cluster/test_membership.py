"""Membership on its own: join, timeout, leave, restart with a new incarnation."""

from __future__ import annotations

from cloudcore.cluster._protocol import Heartbeat
from cloudcore.cluster.membership import Membership
from tests.clock import LoopClock


def beat(node: str, incarnation: int = 1, leaving: bool = False) -> Heartbeat:
    return Heartbeat(
        node=node,
        incarnation=incarnation,
        capabilities={"datacenter": "dc1"},
        kinds=[],
        started_at=0.0,
        leaving=leaving,
    )


async def make() -> tuple[Membership, list[Heartbeat], list[tuple[str, str]]]:
    sent: list[Heartbeat] = []
    downs: list[tuple[str, str]] = []
    membership = Membership(
        beat("me"),
        interval=0.05,
        timeout=0.2,
        send=sent.append,
        on_down=lambda node, reason: downs.append((node, reason)),
    )
    membership.connection(True)
    membership.start()
    return membership, sent, downs


async def test_a_silent_node_is_declared_down_after_the_timeout(loop_clock: LoopClock) -> None:
    membership, sent, downs = await make()
    membership.heard(beat("other"))
    assert membership.status("other") == "up"
    assert sent  # we answered the newcomer at once
    await loop_clock.advance(0.12)  # silent for less than the timeout of 0.2
    assert membership.status("other") == "up" and downs == []
    await loop_clock.advance(0.2)  # past the timeout and the next check
    assert membership.status("other") == "down"
    assert downs == [("other", "node-down")]
    membership.stop()


async def test_heartbeats_keep_a_node_up_and_a_leave_marks_it_left(loop_clock: LoopClock) -> None:
    membership, _, downs = await make()
    for _ in range(8):  # a heartbeat every interval, for twice the timeout
        membership.heard(beat("other"))
        await loop_clock.advance(0.05)
    assert membership.status("other") == "up"
    membership.heard(beat("other", leaving=True))
    assert membership.status("other") == "left"
    assert downs == [("other", "node-left")]
    membership.stop()


async def test_a_restart_with_a_new_incarnation_ends_the_old_one() -> None:
    membership, _, downs = await make()
    membership.heard(beat("other", incarnation=1))
    membership.heard(beat("other", incarnation=2))
    assert downs == [("other", "node-down")]
    assert membership.status("other") == "up"
    membership.stop()


async def test_no_one_is_declared_down_while_this_node_is_disconnected(
    loop_clock: LoopClock,
) -> None:
    membership, _, downs = await make()
    membership.heard(beat("other"))
    membership.connection(False)
    # What must not come: a down verdict. Twice the timeout goes by, one detection run
    # (every half interval) at a time.
    for _ in range(16):
        await loop_clock.advance(0.025)
    assert membership.status("other") == "up" and not downs
    membership.connection(True)  # a fresh timeout for everyone
    assert membership.status("other") == "up"
    membership.stop()
