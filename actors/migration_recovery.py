"""Where a migration left its VM, from what both hypervisors show.

A migration that ended badly (an abort that came too late to stop it, a deadline) or that a
crash cut short (``kill -9`` of the node while the hypervisors went on) is settled from the
truth: the VM is looked for on its source host (the VM actor's driver) and on the target (the
target host's actor). Exactly one of them has it: there it is, and the store follows in one
transaction (:func:`actors.migration.settle` or :func:`actors.migration.give_back`). Both have
it while a hypervisor still runs the migration (the target holds a paused incoming copy until
the end): nothing is decided then, and the watchdog asks again. A host that cannot be asked
defers the decision the same way, so a VM is never put on two hosts, nor on one it is not on.
"""

from __future__ import annotations

import enum

from actors.messages import PowerOf
from actors.migration import MigrationPlan
from cloudcore.errors import CloudcoreError, NotFound, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import ActorSystem
from hypervisor_drivers.base import HypervisorDriver
from hypervisor_drivers.types import GuestPower

__all__ = ["Sighting", "Where", "look", "moved_anyway", "where"]

_log = get_logger("actors.migration")


class Where(enum.StrEnum):
    SOURCE = "source"  # it did not move
    TARGET = "target"  # it moved
    BOTH = "both"  # a hypervisor still migrates it: decide later
    NOWHERE = "nowhere"  # lost on both: the VM stays on its source, in ERROR


Sighting = tuple[GuestPower | None, GuestPower | None]  # (on the source, on the target)


def where(sighting: Sighting) -> Where:
    """Where the VM is, given its power on the source and on the target (None: not there)."""
    source, target = sighting
    if source is None:
        return Where.NOWHERE if target is None else Where.TARGET
    return Where.SOURCE if target is None else Where.BOTH


async def look(
    driver: HypervisorDriver,
    system: ActorSystem,
    datacenter_id: str,
    vm_id: str,
    plan: MigrationPlan,
) -> Sighting:
    """The VM's power on the source (``driver``) and on the target (through its host's
    actor). Raises what a host that cannot be asked raises (BackendUnavailable, NotFound for
    a target host not managed here)."""
    try:
        source: GuestPower | None = await driver.power_state(vm_id)
    except NotFound:
        source = None
    ref = system.lookup(f"/user/dc/{datacenter_id}/{plan.target_id}")
    target: GuestPower | None = await ref.ask(PowerOf(vm_id=vm_id))
    return source, target


async def moved_anyway(
    driver: HypervisorDriver,
    system: ActorSystem,
    datacenter_id: str,
    vm_id: str,
    plan: MigrationPlan,
) -> Sighting | None:
    """After a migration that failed: the sighting if the VM is on the target only (the abort
    came after the hypervisor had finished), else None."""
    try:
        sighting = await look(driver, system, datacenter_id, vm_id, plan)
    except CloudcoreError as exc:
        _log.warning("migration.not_located", vm_id=vm_id, error=describe(exc))
        return None
    if where(sighting) is Where.TARGET:
        _log.warning("migration.completed_despite_failure", vm_id=vm_id, target=plan.target_id)
        return sighting
    return None
