"""What a refusal offers as "allowed now" is only what would be accepted."""

from __future__ import annotations

import pytest

from actors.lifecycle import NOT_BUILT, STABLE, Operation, allowed_operations, transition
from cloudcore.errors import IllegalTransition
from cloudcore.store.records import VMState


@pytest.mark.parametrize("state", sorted(STABLE))
def test_allowed_now_never_offers_an_operation_that_is_not_built(state: VMState) -> None:
    assert not NOT_BUILT & set(allowed_operations(state))


@pytest.mark.parametrize("state", [VMState.RUNNING, VMState.STOPPED])
def test_migrate_is_offered_where_the_table_allows_it(state: VMState) -> None:
    assert Operation.MIGRATE in allowed_operations(state)


@pytest.mark.parametrize("state", [VMState.PAUSED, VMState.SUSPENDED, VMState.ERROR])
def test_migrate_is_not_offered_elsewhere(state: VMState) -> None:
    assert Operation.MIGRATE not in allowed_operations(state)


def test_a_refusal_lists_what_a_running_vm_accepts() -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(Operation.START, VMState.RUNNING, "vm-1")
    allowed = str(caught.value).partition("allowed now: ")[2].split(", ")
    assert allowed == [
        "stop",
        "reboot",
        "pause",
        "suspend",
        "reconfigure",
        "snapshot",
        "revert_snapshot",
        "delete_snapshot",
        "migrate",
        "delete",
    ]
