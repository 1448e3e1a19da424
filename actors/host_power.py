"""Power saving (seed 003): an empty host goes to STANDBY, and is woken when placement needs it.

A host's ``power_state`` is ON, STANDBY or WAKING; only ON takes a claim (the store's claim
checks it), so no VM lands on a host asleep or waking. How the host itself is powered, in
order:

1. the host has a power command (capability ``power.command``, e.g. an IPMI or Wake-on-LAN
   call): run with ``CLOUDCORE_HOST_ID`` and ``CLOUDCORE_HOST_POWER`` (``standby`` or ``on``)
   set; exit status 0 means done;
2. its driver declares the ``HOST_POWER`` capability (a libvirt test host: simulated, and
   said so), called through the host's actor (its live connection).

Neither: :class:`PowerUnavailable`, and the host stays ON. :func:`standby` refuses a host that
holds any VM: it writes STANDBY first (so no claim can follow), then reads the host again and
puts it back ON if a claim came in between. :func:`wake` writes WAKING, powers the host on,
waits ``orchestrator.host_wake_delay`` (the time a real machine takes to boot; the scheduler
counts the host's capacity as available after it) and writes ON.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from actors.host_command import run_host_command
from actors.paging import all_records
from actors.services import Services
from cloudcore.errors import (
    CloudcoreError,
    Conflict,
    UnsupportedOperation,
    VersionConflict,
    describe,
)
from cloudcore.logging import get_logger
from cloudcore.store.records import VM, Host, HostPower, OutboxEvent, VMState

__all__ = ["POWER_COMMAND", "DriverPower", "PowerUnavailable", "set_power", "standby", "wake"]

_log = get_logger("actors.host_power")

#: Host capability naming a command that puts the host to standby or wakes it.
POWER_COMMAND = "power.command"
_COMMAND_TIMEOUT = 120.0


class PowerUnavailable(CloudcoreError):
    """The host has no way to change its power here (no power command, no driver support)."""


#: Powers a host through its driver (the host actor's ``SetHostPower``): standby if True.
DriverPower = Callable[[bool], Awaitable[str]]


async def set_power(host: Host, driver_power: DriverPower, *, standby: bool) -> str:
    """Power ``host`` to standby or on, by its command or else its driver; how, in words.
    Raises PowerUnavailable, or the driver's or the command's error."""
    command = host.capabilities.get(POWER_COMMAND)
    if command:
        return await _by_command(command, host, standby)
    try:
        return await driver_power(standby)
    except UnsupportedOperation as exc:
        raise PowerUnavailable(
            f"host {host.id} has no {POWER_COMMAND} capability and its driver cannot power "
            f"it ({exc})"
        ) from exc


async def _by_command(command: str, host: Host, standby: bool) -> str:
    state = "standby" if standby else "on"
    env = {"CLOUDCORE_HOST_ID": host.id, "CLOUDCORE_HOST_POWER": state}
    failed = await run_host_command(command, env, _COMMAND_TIMEOUT, "power command")
    if failed is not None:
        raise PowerUnavailable(failed)
    return f"its power command set it {state}"


async def _holds_vms(services: Services, host: Host) -> bool:
    if host.cpus_used or host.memory_mib_used:
        return True
    async for vm in all_records(services.store, VM, {"host_id": host.id}):
        if vm.state is not VMState.DELETED:
            return True
    return False


async def _write(services: Services, host_id: str, power: HostPower, how: str = "") -> Host:
    """Set the host's power state (compare-and-set, read again on a conflict with its
    actor's health writes), with a ``host.power_changed`` event."""
    changed = OutboxEvent(
        type="host.power_changed",
        subject=f"host/{host_id}",
        data={"power_state": str(power), **({"how": how} if how else {})},
    )
    for attempt in range(3):
        host = await services.store.get(Host, host_id)
        try:
            return await services.store.update(
                Host, host_id, expected_version=host.version, events=[changed], power_state=power
            )
        except VersionConflict:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def standby(services: Services, host_id: str, driver_power: DriverPower) -> Host:
    """Put an empty ON host to STANDBY. Raises Conflict (it holds VMs, or is not ON),
    VersionConflict (it changed meanwhile), PowerUnavailable; the host stays ON on any error."""
    store = services.store
    host = await store.get(Host, host_id)
    if host.power_state is not HostPower.ON:
        raise Conflict(f"host {host_id} is {host.power_state}: only an ON host goes to standby")
    if await _holds_vms(services, host):
        raise Conflict(f"host {host_id} holds VMs: only an empty host goes to standby")
    asleep = await _write(services, host_id, HostPower.STANDBY)
    try:
        if await _holds_vms(services, asleep):  # a claim came before STANDBY was written
            raise Conflict(f"host {host_id} took a VM while going to standby")
        how = await set_power(asleep, driver_power, standby=True)
    except Exception:
        await _write(services, host_id, HostPower.ON, "standby undone")
        raise
    _log.info("host.standby", host_id=host_id, how=how)
    return await _write(services, host_id, HostPower.STANDBY, how)


async def wake(services: Services, host_id: str, driver_power: DriverPower) -> Host:
    """Wake a STANDBY host: WAKING, powered on, the wake-up delay, then ON. A host ON or WAKING
    already is returned as it is (another wake runs). On a failure it goes back to STANDBY."""
    store = services.store
    host = await store.get(Host, host_id)
    if host.power_state is not HostPower.STANDBY:
        return host
    waking = await _write(services, host_id, HostPower.WAKING)
    try:
        how = await set_power(waking, driver_power, standby=False)
        await asyncio.sleep(services.settings.host_wake_delay)
    except Exception as exc:
        _log.error("host.wake_failed", host_id=host_id, error=describe(exc))
        await _write(services, host_id, HostPower.STANDBY, describe(exc))
        raise
    _log.info("host.woken", host_id=host_id, how=how)
    return await _write(services, host_id, HostPower.ON, how)
