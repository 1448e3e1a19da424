"""What a refusal offers as "allowed now" is only what would be accepted."""

from __future__ import annotations

import pytest

from actors.lifecycle import STABLE, Operation, allowed_operations, transition
from cloudcore.errors import IllegalTransition
from cloudcore.store.records import VMState


@pytest.mark.parametrize("state", sorted(STABLE))
def test_allowed_now_never_offers_an_operation_that_is_not_built(state: VMState) -> None:
    assert Operation.MIGRATE not in allowed_operations(state)


def test_a_refusal_lists_what_a_running_vm_accepts_without_migrate() -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(Operation.START, VMState.RUNNING, "vm-1")
    allowed = str(caught.value).partition("allowed now: ")[2].split(", ")
    assert allowed == ["stop", "reboot", "pause", "suspend", "reconfigure", "snapshot", "delete"]
