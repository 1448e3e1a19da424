"""HA: the VMs of a failed host restarted elsewhere, never running twice.

One :class:`HAActor` per datacenter (a child of its actor) checks every
``orchestrator.ha_check_interval`` seconds. A host whose health has not been HEALTHY for
``orchestrator.ha_grace`` seconds (UNREACHABLE since its ``observed_at``, and at least since
this actor began) is fenced (:mod:`actors.fencing`);
only once a fence method confirms is its health recorded FENCED, and only a FENCED host's VMs
are restarted, so no VM ever runs on two hosts. The down hosts of a check are handled at once
(a slow fence command holds up only its own host). Then, highest ``ha_priority`` first, one
priority at a time, each HA VM still placed there is taken off it (its claim released) under a
new deploy task, which the datacenter runs as any deploy: scheduled by the scheduler, defined and
started on its new host, every step journaled. The VMs of a tier are taken off together
(``_PARALLEL`` writes at a time); the next tier goes once each of them is placed on a host (its
capacity taken first) or its task ended, so starts overlap. A crash of the node during recovery
loses none and doubles none: a deploy task is resumed at start (or picked up PENDING), and the
next check finds only the HA VMs still on the fenced host. VMs without ``ha`` stay where they
were, STOPPED (powered off by the fence) with a fault saying so.

One node runs a datacenter, and its HA with it: when datacenters are leased (PostgreSQL, several
nodes), the holder of the datacenter's lease (:mod:`actors.ownership`), so HA is a singleton
per datacenter; a holder that dies hands it over with the lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any, assert_never

from actors import claims
from actors.fencing import FenceFailed, fence
from actors.journal import FINAL
from actors.messages import Deploy, Forget
from actors.paging import all_records
from actors.registration import update_host
from actors.scheduler.messages import HostUpdated, SchedulerMessage
from actors.services import Services
from actors.vm_events import state_changed
from cloudcore.errors import CloudcoreError, NotFound, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store.records import (
    VM,
    Host,
    HostHealth,
    HostPower,
    OutboxEvent,
    PowerState,
    Task,
    TaskState,
    VMState,
    new_id,
)

__all__ = ["CheckHosts", "HAActor"]

_log = get_logger("actors.ha")
#: States of a VM that HA leaves alone (gone, or already being dealt with).
_SETTLED = frozenset({VMState.DELETED, VMState.DEFINED, VMState.SCHEDULING})
#: Restarts of one tier written at once (their deploys then run as the datacenter runs any).
_PARALLEL = 32


class CheckHosts(Message, frozen=True, kw_only=True):
    """Fence the hosts down past the grace period and recover the VMs of fenced hosts now
    (also sent by a timer). Replies with the ids of the hosts acted on."""


class HAActor(Actor[CheckHosts]):
    def __init__(
        self,
        services: Services,
        datacenter_id: str,
        scheduler: ActorRef[SchedulerMessage] | None,
        deploy: Callable[[Deploy], None],
    ) -> None:
        self.services = services
        self.datacenter_id = datacenter_id
        self.scheduler = scheduler
        self.deploy = deploy  # hands a deploy task to the datacenter
        # host id: (task id, VM id) of the restarts of its current tier
        self.waiting: dict[str, list[tuple[str, str]]] = {}
        # A host recorded down before this actor began (the node was stopped) gets the whole
        # grace period from now to reconnect: never fenced on a stale record.
        self.began = datetime.now(UTC)

    async def started(self) -> None:
        interval = self.services.settings.ha_check_interval
        self.context.schedule_periodic("ha", interval, CheckHosts())

    async def receive(self, message: CheckHosts) -> list[str]:
        match message:
            case CheckHosts():
                return await self._check()
            case _:
                assert_never(message)

    async def _check(self) -> list[str]:
        """Every down host at once: a slow fence command holds up only its own host."""
        hosts = [
            host
            async for host in all_records(
                self.services.store, Host, {"datacenter_id": self.datacenter_id}
            )
            # A host asleep (or waking) for power saving is unreachable on purpose, and empty.
            if host.health in (HostHealth.UNREACHABLE, HostHealth.FENCED)
            and host.power_state is HostPower.ON
        ]
        acted = await asyncio.gather(*(self._handle(host) for host in hosts))
        return [host.id for host, done in zip(hosts, acted, strict=True) if done]

    async def _handle(self, host: Host) -> bool:
        """Fence ``host`` if it has been down past the grace period, then recover its VMs;
        whether it is fenced."""
        if host.health is HostHealth.UNREACHABLE:
            grace = timedelta(seconds=self.services.settings.ha_grace)
            now = datetime.now(UTC)
            if now - max(host.observed_at or now, self.began) < grace:
                return False
            try:
                host = await self._fence(host)
            except (FenceFailed, CloudcoreError) as exc:
                _log.error("ha.fence_failed", host_id=host.id, error=describe(exc))
                return False
        try:
            await self._recover(host)
        except CloudcoreError as exc:  # the next check carries on from the store
            _log.error("ha.recovery_failed", host_id=host.id, error=describe(exc))
        return True

    async def _fence(self, host: Host) -> Host:
        how = await fence(self.services, host)
        fenced = OutboxEvent(
            type="host.fenced",
            subject=f"host/{host.id}",
            data={"health": str(HostHealth.FENCED), "how": how},
        )
        host = await update_host(
            self.services.store,
            host,
            events=[fenced],
            health=HostHealth.FENCED,
            observed_at=datetime.now(UTC),
        )
        if self.scheduler is not None:
            self.scheduler.tell(HostUpdated(host=host))
        _log.warning("ha.fenced", host_id=host.id, how=how)
        return host

    async def _recover(self, host: Host) -> None:
        """Restart the next priority tier of HA VMs still on the fenced ``host`` once the tier
        before has ended; stop the others."""
        if not await self._tier_done(host.id):
            return
        store = self.services.store
        placed = [
            vm
            async for vm in all_records(store, VM, {"host_id": host.id})
            if vm.state not in _SETTLED
        ]
        for vm in placed:
            if not vm.spec.ha and vm.state is not VMState.STOPPED:
                await self._stopped(host, vm)
        waiting = sorted((vm for vm in placed if vm.spec.ha), key=lambda v: -v.spec.ha_priority)
        gate = asyncio.Semaphore(_PARALLEL)

        async def restart(vm: VM) -> tuple[str, str]:
            async with gate:
                return await self._restart(host, vm), vm.id

        for _, tier in groupby(waiting, key=lambda v: v.spec.ha_priority):
            self.waiting[host.id] = list(await asyncio.gather(*(restart(vm) for vm in tier)))
            return

    async def _tier_done(self, host_id: str) -> bool:
        """Whether every VM of the tier restarting has been placed (its capacity taken before
        a lower priority's) or its task has ended."""
        store = self.services.store
        for task_id, vm_id in self.waiting.get(host_id, []):
            if (await store.get(VM, vm_id)).host_id is not None:
                continue
            if (await store.get(Task, task_id)).state not in FINAL:
                return False
        self.waiting.pop(host_id, None)
        return True

    async def _stopped(self, host: Host, vm: VM) -> None:
        """A VM without HA on a fenced host: off, as the fence left it."""
        self._forget(host, vm)
        off = {
            "state": VMState.STOPPED,
            "power": PowerState.OFF,
            "task_id": None,
            "fault": f"host {host.id} failed and was fenced; the VM is not HA: left stopped",
        }
        await self.services.store.update(
            VM, vm.id, expected_version=vm.version, events=state_changed(vm, off), **off
        )

    async def _restart(self, host: Host, vm: VM) -> str:
        """Take ``vm`` off the fenced host under a new deploy task, which the datacenter runs.
        The task is written first, PENDING: a crash after it is picked up by the datacenter's
        poll; a crash before it leaves the VM on the host for the next check."""
        store = self.services.store
        task = await store.create(
            Task(
                id=new_id("task-"),
                tenant_id=vm.tenant_id,
                kind="vm.deploy",
                subject=f"vm/{vm.id}",
                state=TaskState.PENDING,
                data={"start": True, "ha_restart_from": host.id, "priority": vm.spec.ha_priority},
            )
        )
        self._forget(host, vm)
        fault = f"host {host.id} failed and was fenced; restarting elsewhere (HA)"
        await claims.release(
            store,
            vm,
            self.scheduler,
            state=VMState.DEFINED,
            events=[
                *state_changed(vm, {"state": VMState.DEFINED, "power": PowerState.OFF}),
                OutboxEvent(
                    type="vm.ha_restart",
                    subject=f"vm/{vm.id}",
                    tenant_id=vm.tenant_id,
                    data={"from_host": host.id, "task_id": task.id},
                ),
            ],
            power=PowerState.OFF,
            task_id=task.id,
            fault=fault,
        )
        self.deploy(Deploy(task=task))
        _log.warning("ha.restarting", vm_id=vm.id, host_id=host.id, task_id=task.id)
        return task.id

    def _forget(self, host: Host, vm: VM) -> None:
        """Stop the VM's actor under the dead host: the record changes behind it now."""
        try:
            ref: ActorRef[Any] = self.context.system.lookup(
                f"/user/dc/{self.datacenter_id}/{host.id}"
            )
        except NotFound:
            return
        ref.tell(Forget(vm_id=vm.id))
