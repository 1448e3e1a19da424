"""The balancer of a datacenter: its balancing policy applied every ``balance_interval``, and
its hosts' power (seed 003).

A child of the datacenter actor. Each round reads the datacenter's ``balance_policy`` from the
store (``off``, ``spread``, ``consolidate``; set by the API or the CLI) and, unless it is off,
makes the moves of :func:`actors.balancer.plan` (at most ``balance_max_moves``) as ``vm.migrate``
tasks. Hysteresis, so nothing moves back and forth: no round begins while the migrations of the
last are in flight, a VM it moved stays put for ``balance_cooldown`` seconds, and the plan only
makes moves that narrow the gap they act on (see :mod:`actors.balancer`). Under
``consolidate`` an empty host (ON, ENABLED, HEALTHY, no VM) goes to STANDBY
(:mod:`actors.host_power`), unless it was woken within the cool-down (or could not be
powered: no power command, no driver support). The scheduler asks it to wake a standby host
when a placement needs that capacity (:class:`Wake`). Its last plan, with the explanation, is
logged (``balance.planned``) and kept (:class:`LastPlan`, for the console and tests).
"""

from __future__ import annotations

import asyncio
import time
from typing import assert_never

from actors import host_power
from actors.balancer import BalancePlan, plan
from actors.journal import FINAL
from actors.lifecycle import Operation
from actors.messages import RequestOperation, SetHostPower
from actors.operations import MigrateParams
from actors.paging import all_records
from actors.scheduler.messages import HostUpdated, SchedulerMessage
from actors.services import Services
from cloudcore.errors import CloudcoreError, VersionConflict, describe
from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, ActorRef, Message
from cloudcore.store import Store
from cloudcore.store.records import (
    VM,
    AdminState,
    BalancePolicy,
    Datacenter,
    Host,
    HostHealth,
    HostPower,
    OutboxEvent,
    Task,
)

__all__ = [
    "BalancerActor",
    "BalancerMessage",
    "LastPlan",
    "Rebalance",
    "Wake",
    "datacenter_load",
    "store_policy",
]

_log = get_logger("actors.balancing")


async def datacenter_load(store: Store, datacenter_id: str) -> tuple[list[Host], list[VM]]:
    """The datacenter's hosts and VMs, as a plan reads them: one walk each, not a query per
    host."""
    where = {"datacenter_id": datacenter_id}
    hosts = [h async for h in all_records(store, Host, where)]
    vms = [v async for v in all_records(store, VM, where)]
    return hosts, vms


async def store_policy(store: Store, datacenter_id: str, policy: BalancePolicy) -> Datacenter:
    """Store the datacenter's balancing policy (compare-and-set, read again on a conflict),
    with a ``datacenter.balance_policy_changed`` event. NotFound."""
    changed = OutboxEvent(
        type="datacenter.balance_policy_changed",
        subject=f"datacenter/{datacenter_id}",
        data={"balance_policy": str(policy)},
    )
    for attempt in range(3):
        dc = await store.get(Datacenter, datacenter_id)
        try:
            dc = await store.update(
                Datacenter,
                datacenter_id,
                expected_version=dc.version,
                events=[changed],
                balance_policy=policy,
            )
        except VersionConflict:
            if attempt == 2:
                raise
            continue
        _log.info("datacenter.balance_policy", datacenter_id=datacenter_id, policy=str(policy))
        return dc
    raise AssertionError("unreachable")


class Rebalance(Message, frozen=True, kw_only=True):
    """Run a round now (also sent by the timer). Replies with its plan, or None when the
    policy is off or the last round's migrations are still in flight."""


class LastPlan(Message, frozen=True, kw_only=True):
    """Replies with the plan of the last round that planned (None before the first)."""


class Wake(Message, frozen=True, kw_only=True):
    """Wake the standby host ``host_id`` (the scheduler needs its capacity); the scheduler is
    told once it is ON. Replies None at once; a wake already running is not doubled."""

    host_id: str


BalancerMessage = Rebalance | LastPlan | Wake


class BalancerActor(Actor[BalancerMessage]):
    def __init__(
        self, services: Services, datacenter_id: str, scheduler: ActorRef[SchedulerMessage]
    ) -> None:
        self.services = services
        self.datacenter_id = datacenter_id
        self.scheduler = scheduler
        self.last: BalancePlan | None = None
        self.moved: dict[str, float] = {}  # VM id: when this balancer last moved it
        self.woken: dict[str, float] = {}  # host id: when it was last woken
        self.unpowered: dict[str, float] = {}  # host id: when it could not be put to standby
        self.in_flight: list[str] = []  # the task ids of the last round's migrations
        self.wakes: dict[str, asyncio.Task[None]] = {}

    async def started(self) -> None:
        interval = self.services.settings.balance_interval
        self.context.schedule_periodic("balance", interval, Rebalance())

    async def stopping(self) -> None:
        for wake in self.wakes.values():
            wake.cancel()

    async def receive(self, message: BalancerMessage) -> BalancePlan | None:
        match message:
            case Rebalance():
                try:
                    return await self._round()
                except CloudcoreError as exc:  # the store or an actor failed: next round
                    _log.warning("balance.round_failed", error=describe(exc))
                    return None
            case LastPlan():
                return self.last
            case Wake(host_id=host_id):
                self._wake(host_id)
                return None
            case _:
                assert_never(message)

    async def _round(self) -> BalancePlan | None:
        store, settings = self.services.store, self.services.settings
        policy = (await store.get(Datacenter, self.datacenter_id)).balance_policy
        if policy is BalancePolicy.OFF or await self._busy():
            return None
        now = time.monotonic()
        self.moved = {v: t for v, t in self.moved.items() if now - t < settings.balance_cooldown}
        hosts, vms = await datacenter_load(store, self.datacenter_id)
        made = plan(
            hosts,
            vms,
            policy,
            threshold=settings.balance_threshold,
            max_moves=settings.balance_max_moves,
            ceiling=settings.balance_ceiling,
            recent=frozenset(self.moved),
        )
        self.last = made
        _log.info(
            "balance.planned", policy=str(policy), moves=len(made.moves), why=made.explanation
        )
        begun = [await self._migrate(move.vm_id, move.target) for move in made.moves]
        self.in_flight = [task.id for task in begun if task is not None]
        if policy is BalancePolicy.CONSOLIDATE:
            for host in hosts:
                if self._may_sleep(host, now):
                    await self._standby(host.id)
        return made

    async def _busy(self) -> bool:
        """Whether a migration of the last round is still in flight."""
        left = []
        for task_id in self.in_flight:
            if (await self.services.store.get(Task, task_id)).state not in FINAL:
                left.append(task_id)
        self.in_flight = left
        return bool(left)

    async def _migrate(self, vm_id: str, target: str) -> Task | None:
        try:
            vm = await self.services.store.get(VM, vm_id)
            ref = self.context.system.lookup(f"/user/dc/{vm.datacenter_id}/{vm.host_id}/{vm.id}")
            params = MigrateParams(host_id=target)
            task: Task = await ref.ask(RequestOperation(operation=Operation.MIGRATE, params=params))
        except CloudcoreError as exc:  # busy, gone, or the target changed: the next round
            _log.info("balance.move_refused", vm_id=vm_id, target=target, error=describe(exc))
            return None
        self.moved[vm_id] = time.monotonic()
        return task

    def _may_sleep(self, host: Host, now: float) -> bool:
        cooldown = self.services.settings.balance_cooldown
        return (
            host.power_state is HostPower.ON
            and host.admin_state is AdminState.ENABLED
            and host.health is HostHealth.HEALTHY
            and host.cpus_used == 0
            and host.memory_mib_used == 0
            and host.id not in self.wakes
            and now - self.woken.get(host.id, -cooldown) >= cooldown
            and now - self.unpowered.get(host.id, -cooldown) >= cooldown
        )

    async def _standby(self, host_id: str) -> None:
        try:
            host = await host_power.standby(self.services, host_id, self._driver_power(host_id))
        except CloudcoreError as exc:  # it took a VM meanwhile, or cannot be powered: stays ON
            _log.info("balance.standby_refused", host_id=host_id, error=describe(exc))
            if isinstance(exc, host_power.PowerUnavailable):  # not tried again for a while
                self.unpowered[host_id] = time.monotonic()
            return
        self.scheduler.tell(HostUpdated(host=host))

    def _driver_power(self, host_id: str) -> host_power.DriverPower:
        async def through_host_actor(standby: bool) -> str:
            ref = self.context.system.lookup(f"/user/dc/{self.datacenter_id}/{host_id}")
            how: str = await ref.ask(SetHostPower(standby=standby))
            return how

        return through_host_actor

    def _wake(self, host_id: str) -> None:
        if host_id in self.wakes:
            return
        self.wakes[host_id] = asyncio.create_task(self._waking(host_id))

    async def _waking(self, host_id: str) -> None:
        try:
            host = await host_power.wake(self.services, host_id, self._driver_power(host_id))
            self.woken[host_id] = time.monotonic()
        except Exception as exc:  # back in STANDBY (host_power says why); a placement retries
            _log.error("balance.wake_failed", host_id=host_id, error=describe(exc))
            try:
                host = await self.services.store.get(Host, host_id)
            except CloudcoreError:
                return
        finally:
            self.wakes.pop(host_id, None)
        self.scheduler.tell(HostUpdated(host=host))
