"""The event a change of a VM's state or power causes, written with the change (the outbox)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudcore.store.records import VM, OutboxEvent, PowerState, VMState

__all__ = ["state_changed"]


def state_changed(vm: VM, changes: Mapping[str, Any]) -> list[OutboxEvent]:
    """``vm.state_changed`` for ``changes`` to ``vm`` (as ``Store.update`` takes them), or none
    when they move neither its state nor its power. Pass it as the write's ``events``."""
    state = VMState(changes.get("state", vm.state))
    if state is vm.state and "power" not in changes:
        return []
    return [
        OutboxEvent(
            type="vm.state_changed",
            subject=f"vm/{vm.id}",
            tenant_id=vm.tenant_id,
            data={
                "state": str(state),
                "power": str(PowerState(changes.get("power", vm.power))),
                "task_id": changes.get("task_id", vm.task_id),
                "fault": changes.get("fault", vm.fault),
            },
        )
    ]
