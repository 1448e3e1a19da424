"""Reconciliation rules (Abiquo's virtual system monitor): what to do when the hypervisor shows
something other than what the store says. Pure functions; the VM actor applies the decision.

- A VM with a task in flight is left alone: the task owns the truth until it ends.
- A VM missing from its hypervisor is called missing only after two sweeps in a row.
- Power drift with no task: ``follow`` records what the hypervisor shows (a VM powered off behind
  our back becomes STOPPED, with a fault saying so); ``enforce`` drives it back to its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.lifecycle import Operation
from actors.messages import VMChange
from cloudcore.store.records import VM, PowerState, VMState

__all__ = ["POWER_FOR_STATE", "STATE_FOR_POWER", "Decision", "reconcile"]

STATE_FOR_POWER = {
    PowerState.ON: VMState.RUNNING,
    PowerState.OFF: VMState.STOPPED,
    PowerState.PAUSED: VMState.PAUSED,
    PowerState.SUSPENDED: VMState.SUSPENDED,
}
POWER_FOR_STATE = {state: power for power, state in STATE_FOR_POWER.items()}

#: (state it should be in, power seen) -> the operation that brings it back.
_ENFORCE = {
    (VMState.RUNNING, PowerState.OFF): Operation.START,
    (VMState.STOPPED, PowerState.ON): Operation.STOP,
    (VMState.STOPPED, PowerState.PAUSED): Operation.STOP,
    (VMState.PAUSED, PowerState.ON): Operation.PAUSE,
    (VMState.RUNNING, PowerState.PAUSED): Operation.RESUME,
    (VMState.RUNNING, PowerState.SUSPENDED): Operation.RESUME,
}


@dataclass(frozen=True, slots=True)
class Decision:
    changes: VMChange = field(default_factory=VMChange)
    enforce: Operation | None = None
    action: str = "none"


def reconcile(vm: VM, power: PowerState | None, missing_sweeps: int, policy: str) -> Decision:
    """What to do about ``vm`` now that its hypervisor shows ``power`` (None: not there)."""
    owned = vm.state in POWER_FOR_STATE or vm.state in (VMState.UNKNOWN, VMState.ERROR)
    if vm.task_id is not None or not owned:
        return Decision()  # a task in flight owns the truth, or a state the monitor leaves alone
    if power is None:
        if missing_sweeps < 2 or vm.state is VMState.ERROR:
            return Decision()
        fault = "missing on its hypervisor for two sweeps"
        return Decision(
            VMChange(state=VMState.ERROR, power=PowerState.UNKNOWN, fault=fault), action="missing"
        )
    seen = STATE_FOR_POWER.get(power)
    if seen is None:
        return Decision()
    if vm.state in (VMState.UNKNOWN, VMState.ERROR) and vm.fault and "missing" in vm.fault:
        return Decision(VMChange(state=seen, power=power, fault=None), action="found")
    if vm.state is VMState.UNKNOWN:
        return Decision(VMChange(state=seen, power=power), action="observed")
    if vm.state is seen or vm.state is VMState.ERROR:
        return Decision(VMChange(power=power) if vm.power is not power else VMChange())
    enforce = _ENFORCE.get((vm.state, power)) if policy == "enforce" else None
    verb = "enforcing" if enforce else "followed"
    # Record what is true first, so the operation that enforces starts from a legal state.
    fault = f"{power.value.lower()} on the hypervisor while {vm.state.value}: {verb}"
    return Decision(
        VMChange(state=seen, power=power, fault=fault),
        enforce=enforce,
        action="enforce" if enforce else "follow",
    )
