"""The claim invariant, after every step of randomized sequences on both stores: each host's
claim equals the sum of the specs of the VMs placed on it (host set, not DELETED), plus a
migration's hold while one is taken, and the scheduler's view equals the store. Steps are
placements (through the scheduler), resizes that grow or shrink, fit or not, succeed or fail
(``actors.claims``), deletes, moves between hosts at the store level, and migrations' holds
(``actors.migration``) ended by the move or given back."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import claims, migration
from actors.scheduler import Explain, PlaceVM, SchedulerActor, resume_on_conflict
from cloudcore.config import RuntimeSettings
from cloudcore.errors import Conflict, NoValidHost
from cloudcore.runtime import ActorRef, ActorSystem, SupervisorStrategy
from cloudcore.store.base import Store
from cloudcore.store.records import VM, Host, VMSpec, VMState
from tests.contract.store.factory import Factory

_HOSTS = ((4, 4096), (8, 8192), (2, 16384))
_SIZE = st.tuples(st.integers(1, 6), st.sampled_from([256, 1024, 2048, 4096, 9000]))
_STEP = st.one_of(
    st.tuples(st.just("create"), _SIZE),
    st.tuples(st.just("resize"), st.integers(0, 20), _SIZE, st.booleans()),
    st.tuples(st.just("delete"), st.integers(0, 20)),
    st.tuples(st.just("move"), st.integers(0, 20), st.integers(0, len(_HOSTS) - 1)),
    st.tuples(
        st.just("migrate"), st.integers(0, 20), st.integers(0, len(_HOSTS) - 1), st.booleans()
    ),
)


class _Run:
    def __init__(self, store: Store, make: Factory, system: ActorSystem) -> None:
        self.store, self.make, self.system = store, make, system
        self.vms: list[str] = []
        self.hosts: list[Host] = []

    async def start(self) -> ActorRef:
        self.tenant = await self.make.tenant()
        self.dc = await self.make.datacenter()
        for cpus, memory in _HOSTS:
            self.hosts.append(await self.make.host(self.dc, cpus=cpus, memory_mib=memory))
        self.actors: list[SchedulerActor] = []  # the incarnations, so check() reads the view

        def scheduler() -> SchedulerActor:
            actor = SchedulerActor(self.store, self.dc.id)
            self.actors.append(actor)
            return actor

        self.scheduler = self.system.spawn(scheduler)
        return self.scheduler

    async def step(self, step: tuple[Any, ...]) -> None:
        kind = step[0]
        if kind == "create":
            cpus, memory = step[1]
            vm = await self.make.vm(self.tenant, self.dc, spec=VMSpec(cpus=cpus, memory_mib=memory))
            self.vms.append(vm.id)
            with contextlib.suppress(NoValidHost):
                await self.scheduler.ask(PlaceVM(vm_id=vm.id, expected_version=vm.version))
            return
        if not self.vms:
            return
        vm = await self.store.get(VM, self.vms[step[1] % len(self.vms)])
        with contextlib.suppress(Conflict):  # InsufficientCapacity, on no host: refused
            await self._act(vm, step)

    async def _act(self, vm: VM, step: tuple[Any, ...]) -> None:
        store, view = self.store, self.scheduler
        if step[0] == "resize":
            (cpus, memory), succeeds = step[2], step[3]
            old = vm.spec
            target = claims.resized(old, cpus, memory)
            vm = await claims.begin_resize(store, vm, target, view)
            await self.check()  # the larger of both sizes is held while it runs
            await claims.end_resize(store, vm, target if succeeds else old, view)
        elif step[0] == "delete":
            await claims.delete(store, vm, view)
        elif step[0] == "move":
            await claims.move(store, vm, self.hosts[step[2]].id, view)
        elif step[0] == "migrate":  # held first, then moved with the hold or given it back
            await self._migrate(vm, self.hosts[step[2]].id, moved=step[3])

    async def _migrate(self, vm: VM, target: str, *, moved: bool) -> None:
        if vm.host_id is None or vm.state is VMState.DELETED:
            return
        plan = migration.MigrationPlan(
            source_id=vm.host_id,
            target_id=target,
            live=False,
            cpus=vm.spec.cpus,
            memory_mib=vm.spec.memory_mib,
        )
        vm = await migration.hold(self.store, vm, plan, self.scheduler, [], task_id="t")
        await self.check(hold=(target, vm.spec))  # the target holds it besides its VMs
        end = migration.settle if moved else migration.give_back
        await end(self.store, vm, plan, self.scheduler, [], task_id=None)

    async def check(self, hold: tuple[str, VMSpec] | None = None) -> None:
        held: dict[str, tuple[int, int]] = {h.id: (0, 0) for h in self.hosts}
        if hold is not None:
            held[hold[0]] = (hold[1].cpus, hold[1].memory_mib)
        for vm_id in self.vms:
            vm = await self.store.get(VM, vm_id)
            if vm.host_id is not None and vm.state is not VMState.DELETED:
                cpus, memory = held[vm.host_id]
                held[vm.host_id] = (cpus + vm.spec.cpus, memory + vm.spec.memory_mib)
        await self.scheduler.ask(Explain(spec=VMSpec(cpus=1, memory_mib=1), tenant_id="t"))
        engine = self.actors[-1].engine
        for host in self.hosts:
            stored = await self.store.get(Host, host.id)
            assert (stored.cpus_used, stored.memory_mib_used) == held[host.id], host.id
            view = engine.host(host.id)
            assert (view.cpus_used, view.memory_mib_used) == held[host.id], host.id


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_STEP, min_size=1, max_size=25))
async def test_every_host_claim_is_the_sum_of_its_vms_and_the_view_follows(
    store: Store, make: Factory, steps: list[tuple[Any, ...]]
) -> None:
    system = ActorSystem(
        "claims",
        RuntimeSettings(ask_timeout=30.0, shutdown_timeout=5.0),
        user_strategy=SupervisorStrategy(decider=resume_on_conflict),
    )
    try:
        run = _Run(store, make, system)
        await run.start()
        await run.check()
        for step in steps:
            await run.step(step)
            await run.check()
    finally:
        await system.shutdown()
