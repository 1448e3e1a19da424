"""The volume state machine: what each state accepts, where each operation ends, and refusals
that name the state and what is allowed."""

from __future__ import annotations

import pytest

from actors.volume_lifecycle import (
    NOT_BUILT,
    STABLE,
    TRANSITIONS,
    VolumeOperation,
    allowed_operations,
    transition,
)
from cloudcore.errors import IllegalTransition
from cloudcore.store.records import VolumeState

S = VolumeState
Op = VolumeOperation

#: The whole table, written out: (operation, from) -> (transient, success, failure).
EXPECTED = {
    (Op.CREATE, S.CREATING): (S.CREATING, S.AVAILABLE, S.ERROR),
    (Op.ATTACH, S.AVAILABLE): (S.ATTACHING, S.ATTACHED, S.AVAILABLE),
    (Op.DETACH, S.ATTACHED): (S.DETACHING, S.AVAILABLE, None),
    (Op.EXTEND, S.AVAILABLE): (S.EXTENDING, None, None),
    (Op.EXTEND, S.ATTACHED): (S.EXTENDING, None, None),
    (Op.SNAPSHOT, S.AVAILABLE): (S.SNAPSHOTTING, None, None),
    (Op.SNAPSHOT, S.ATTACHED): (S.SNAPSHOTTING, None, None),
    (Op.DELETE_SNAPSHOT, S.AVAILABLE): (S.SNAPSHOTTING, None, None),
    (Op.DELETE_SNAPSHOT, S.ATTACHED): (S.SNAPSHOTTING, None, None),
    (Op.DELETE, S.AVAILABLE): (S.DELETING, S.DELETED, S.ERROR),
    (Op.DELETE, S.ERROR): (S.DELETING, S.DELETED, S.ERROR),
}


def test_the_table_is_exactly_the_legal_transitions() -> None:
    legal = {(op, src) for op, t in TRANSITIONS.items() for src in t.sources}
    assert legal == set(EXPECTED)
    for (op, _), (transient, success, failure) in EXPECTED.items():
        t = TRANSITIONS[op]
        assert (t.transient, t.success, t.failure) == (transient, success, failure)


@pytest.mark.parametrize(("op", "state"), sorted(k for k in EXPECTED if k[0] not in NOT_BUILT))
def test_every_legal_built_transition_is_granted(op: VolumeOperation, state: VolumeState) -> None:
    assert transition(op, state, "v1").transient == EXPECTED[(op, state)][0]


@pytest.mark.parametrize("op", sorted(set(Op) - NOT_BUILT))
@pytest.mark.parametrize("state", sorted(S))
def test_every_illegal_transition_is_refused_naming_state_and_allowed(
    op: VolumeOperation, state: VolumeState
) -> None:
    if (op, state) in EXPECTED:
        return
    with pytest.raises(IllegalTransition) as caught:
        transition(op, state, "v1")
    message = str(caught.value)
    assert f"cannot {op} volume v1: it is {state}; allowed now: " in message
    allowed = message.partition("allowed now: ")[2]
    expected = [str(o) for o in allowed_operations(state)]
    assert allowed == (", ".join(expected) or "none until the current one finishes")


def test_every_operation_is_built() -> None:
    assert frozenset() == NOT_BUILT


def test_what_each_resting_state_offers() -> None:
    assert {s: allowed_operations(s) for s in STABLE} == {
        S.AVAILABLE: [Op.ATTACH, Op.EXTEND, Op.SNAPSHOT, Op.DELETE_SNAPSHOT, Op.DELETE],
        S.ATTACHED: [Op.DETACH, Op.EXTEND, Op.SNAPSHOT, Op.DELETE_SNAPSHOT],
        S.ERROR: [Op.DELETE],
    }
    assert allowed_operations(S.DELETED) == [] and allowed_operations(S.DELETING) == []
    assert allowed_operations(S.CREATING) == [Op.CREATE]


def test_every_transient_state_is_left_by_success_and_failure() -> None:
    transients = {t.transient for t in TRANSITIONS.values()}
    assert transients.isdisjoint(STABLE)
    for t in TRANSITIONS.values():
        for end in (t.success, t.failure):
            assert end is None or end in STABLE | {S.DELETED}
