"""The node's DHCP servers follow the store through the event bus: a VM created with a NIC is
served by its network's dnsmasq (a real diskless guest takes exactly its address, seen as a
``nic.lease`` event), its delete takes the entry away, a hosts file edited behind the actor's
back is reconciled, a lease for a MAC the store does not know is reported, and a network created
later gets its own server."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.dhcp import DhcpServers, GetDhcpServers
from actors.network import DhcpOptions, DhcpStatus, SyncDhcp
from cloudcore.config import RuntimeSettings
from cloudcore.events import EventBus
from cloudcore.events.base import Event
from cloudcore.events.local import LocalEventBus
from cloudcore.events.relay import OutboxRelayActor
from cloudcore.runtime import ActorRef, ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import (
    VM,
    Datacenter,
    IpAllocation,
    Network,
    NicRequest,
    OutboxEvent,
    Task,
    Tenant,
    VMSpec,
    VMState,
    new_id,
)
from cloudcore.store.sqlite import SqliteStore
from tests.integration.network.conftest import Netns
from tests.waiting import eventually


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    backend = await SqliteStore.connect(tmp_path / "cloudcore.db")
    await backend.upgrade()
    yield backend
    await backend.close()


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    events = LocalEventBus()
    yield events
    await events.close()


@pytest.fixture
async def system(store: Store, bus: EventBus) -> AsyncIterator[ActorSystem]:
    actors = ActorSystem("dhcp", RuntimeSettings(ask_timeout=30.0, shutdown_timeout=10.0))
    actors.spawn(OutboxRelayActor, store, bus, name="outbox-relay")
    yield actors
    await actors.shutdown()


async def _vm_with_nic(store: Store, network: Network) -> tuple[VM, IpAllocation]:
    vm = VM(
        id=new_id(uuid=True),
        tenant_id="t1",
        datacenter_id=network.datacenter_id,
        name="web",
        spec=VMSpec(cpus=1, memory_mib=128, nics=(NicRequest(network_id=network.id),)),
    )
    task = Task(id=f"task-{vm.id}", tenant_id="t1", kind="vm.deploy", subject=f"vm/{vm.id}")
    stored, _ = await store.create_vm(vm, task, {})
    [nic] = await store.list_ips(vm_id=vm.id)
    return stored, nic


async def _status(dhcp: ActorRef, network_id: str) -> DhcpStatus | None:
    statuses: dict[str, DhcpStatus] = await dhcp.ask(GetDhcpServers())
    return statuses.get(network_id)


async def _serving(dhcp: ActorRef, network_id: str, entry: str, present: bool = True) -> bool:
    status = await _status(dhcp, network_id)
    return status is not None and status.pid is not None and (entry in status.entries) == present


def _ip_in(netns: Netns, *args: str) -> None:
    subprocess.run(["ip", "-n", netns.name, *args], check=True, capture_output=True, timeout=30)


async def _next(events: AsyncIterator[Event], kind: str) -> Event:
    async for event in events:
        if event.type == kind:
            return event
    raise AssertionError("the bus closed")


async def test_the_dhcp_servers_follow_the_store_through_events(
    store: Store, bus: EventBus, system: ActorSystem, netns: Netns, tmp_path: Path
) -> None:
    await store.create(Tenant(id="t1", name="t1"))
    dc = await store.create(Datacenter(id=new_id("dc-"), name="dc"))
    lan = await store.create_network(
        Network(
            id=new_id("net-"),
            datacenter_id=dc.id,
            tenant_id="t1",
            name="lan",
            cidr="10.77.0.0/24",
            gateway="10.77.0.1",
            bridge=netns.bridge,
            quarantine_s=0,
        )
    )
    options = DhcpOptions(
        state_dir=str(tmp_path / "dhcp"),
        wrapper=("ip", "netns", "exec", netns.name),
        user="root",  # pytest's tmp dirs are 0700
        resync_interval=3600.0,  # only events make it sync during the test
    )
    dhcp = system.spawn(DhcpServers, store, bus, options, dc.id, name="dhcp")
    leases = bus.subscribe(types=("nic.lease", "dhcp.drift"))
    first_lease = asyncio.ensure_future(_next(leases, "nic.lease"))

    vm, nic = await _vm_with_nic(store, lan)
    entry = f"{nic.mac},{nic.address}"
    await eventually(lambda: _serving(dhcp, lan.id, entry), timeout=10, interval=0.05)

    # a real guest with the NIC's MAC takes exactly the store's address
    netns.boot_guest(str(nic.mac))
    lease = await asyncio.wait_for(first_lease, 90)
    assert (lease.data["mac"], lease.data["address"]) == (nic.mac, nic.address)
    assert f"{nic.mac} {nic.address}" in (tmp_path / "dhcp" / lan.id / "leases").read_text()

    # drift: an entry without a NIC and a lease for a MAC the store does not know
    hosts = tmp_path / "dhcp" / lan.id / "hosts"
    hosts.write_text(hosts.read_text() + "52:54:00:de:ad:01,10.77.0.200\n")
    with (tmp_path / "dhcp" / lan.id / "leases").open("a") as file:
        file.write("9999999999 52:54:00:de:ad:02 10.77.0.201 * *\n")
    network_actor = system.lookup(f"/user/dhcp/{lan.id}")
    reconciled: DhcpStatus = await network_actor.ask(SyncDhcp())
    assert hosts.read_text() == f"{entry}\n"
    assert reconciled.drift == {"stale_entry": 1, "unknown_lease": 1}
    reported = await asyncio.wait_for(_next(leases, "dhcp.drift"), 10)
    assert reported.data == {
        "mac": "52:54:00:de:ad:02",
        "address": "10.77.0.201",
        "kind": "unknown_lease",
    }

    # the VM deleted: its entry leaves the hosts file, pushed by the nic.removed event
    await store.unplace_vm(vm.id, expected_version=vm.version, state=VMState.DELETED)
    await eventually(lambda: _serving(dhcp, lan.id, entry, present=False), timeout=10)
    assert hosts.read_text() == ""

    # a network created later (on a second bridge) gets its own server
    for args in (
        ("link", "add", "ccbr1", "type", "bridge"),
        ("addr", "add", "10.78.0.1/24", "dev", "ccbr1"),
        ("link", "set", "ccbr1", "up"),
    ):
        await asyncio.to_thread(_ip_in, netns, *args)
    later = Network(
        id=new_id("net-"), datacenter_id=dc.id, name="later", cidr="10.78.0.0/24", bridge="ccbr1"
    )
    created = OutboxEvent(type="network.created", subject=f"network/{later.id}")
    await store.create_network(later, events=[created])
    await eventually(lambda: _serving(dhcp, later.id, "", present=False), timeout=10)
    await leases.aclose()
