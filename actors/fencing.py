"""Fencing: making sure a failed host runs none of its VMs before HA restarts them elsewhere.

Methods are tried in order; the first that confirms wins, and says how:

1. the hypervisor still answers (a fresh connection): every VM on it is powered off through it;
2. the host has a fence command (capability ``fence.command``, e.g. an IPMI power-off): it is
   run with ``CLOUDCORE_HOST_ID`` set; exit status 0 confirms the host is off. A host that is off
   already counts as fenced (a command must succeed on an off host: CloudStack's HA never fired
   when fencing an already-off host failed);
3. a simulated host (libvirt's test driver, ``test:///``): its hypervisor lived in this process
   and is gone with its connection. Said so.

None confirms: :class:`FenceFailed`, and no VM is restarted (the next check tries again).
"""

from __future__ import annotations

import asyncio
import contextlib

from actors.host_command import run_host_command
from actors.services import Services
from cloudcore.errors import CloudcoreError, describe
from cloudcore.logging import get_logger
from cloudcore.store.records import Host

__all__ = ["FENCE_COMMAND", "FenceFailed", "fence"]

_log = get_logger("actors.ha")

#: Host capability naming a command that powers the host off (exit status 0: it is off).
FENCE_COMMAND = "fence.command"
_COMMAND_TIMEOUT = 60.0


class FenceFailed(CloudcoreError):
    """No fence method could confirm that the host runs none of its VMs."""


async def fence(services: Services, host: Host) -> str:
    """Confirm ``host`` runs none of its VMs; how it was confirmed. Raises FenceFailed."""
    tried = []
    for method in (_through_hypervisor, _by_command, _simulated):
        try:
            how = await method(services, host)
        except Exception as exc:
            tried.append(f"{method.__name__.strip('_')}: {describe(exc)}")
            continue
        if how is not None:
            return how
    raise FenceFailed(f"host {host.id} could not be fenced ({'; '.join(tried) or 'no method'})")


async def _through_hypervisor(services: Services, host: Host) -> str | None:
    if host.address.startswith("test:///"):
        return None  # a test host's fresh connection is a new, empty hypervisor: proves nothing
    driver = services.driver_factory(host)
    async with asyncio.timeout(services.settings.step_deadline):
        await driver.connect()
        try:
            for vm in await driver.list_vms():
                with contextlib.suppress(CloudcoreError):
                    await driver.stop_vm(vm.uuid, timeout=0)
        finally:
            await driver.close()
    return "its hypervisor answered: every VM on it powered off through it"


async def _by_command(services: Services, host: Host) -> str | None:
    command = host.capabilities.get(FENCE_COMMAND)
    if not command:
        return None
    env = {"CLOUDCORE_HOST_ID": host.id}
    failed = await run_host_command(command, env, _COMMAND_TIMEOUT, "fence command")
    if failed is not None:
        raise FenceFailed(failed)
    return "its fence command confirmed it powered off"


async def _simulated(services: Services, host: Host) -> str | None:
    if not host.address.startswith("test:///"):
        return None
    return "simulated: a test-driver host's hypervisor lived in this process, gone with it"
