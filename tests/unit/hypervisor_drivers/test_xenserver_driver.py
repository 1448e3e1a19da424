"""The XenServer driver against the XAPI simulator: what the contract suite cannot show.

Authentication, XAPI faults translated, a lost session, a malformed or dropped reply, the clean
shutdown deadline, migration inside the pool, memory refused by a host, the password from the
environment. The simulator is in-process (``tests/simulators/xapi``) on a loopback port.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from importlib import import_module
from pathlib import Path

import pytest
import structlog

from cloudcore.errors import (
    BackendUnavailable,
    ConfigError,
    DriverError,
    IllegalTransition,
    InsufficientCapacity,
    NotFound,
)
from hypervisor_drivers.base import (
    DomainSpec,
    DriverSettings,
    EventKind,
    FileDisk,
    GuestPower,
    NicSpec,
    StopOutcome,
)
from hypervisor_drivers.xenserver import XenServerDriver
from tests.contract.hypervisor.harness import next_event
from tests.simulators.xapi import Xapi, XapiServer, running_xapi

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def server() -> Iterator[XapiServer]:
    with running_xapi(Xapi(host_memory_kib=4 * 1024 * 1024)) as server:
        yield server


def _settings(server: XapiServer, **extra: str) -> DriverSettings:
    return DriverSettings(
        uri=server.url, username="root", password="secret", extra={"timeout": "1", **extra}
    )


@pytest.fixture
async def driver(server: XapiServer) -> AsyncIterator[XenServerDriver]:
    driver = XenServerDriver(_settings(server, host="xs-host-1"))
    await driver.connect()
    yield driver
    await driver.close()


def _spec(server: XapiServer, memory_mib: int = 256) -> DomainSpec:
    vm = str(uuid.uuid4())
    disk = FileDisk(path=server.xapi.add_vdi(f"root-{vm}"), serial="root")
    return DomainSpec(uuid=vm, name=f"vm-{vm[:8]}", vcpus=1, memory_mib=memory_mib, disks=[disk])


def test_the_entry_points_name_the_driver_classes() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    points = pyproject["project"]["entry-points"]["cloudcore.hypervisor_drivers"]
    module, _, attribute = points["xenserver"].partition(":")
    assert getattr(import_module(module), attribute) is XenServerDriver
    assert "XenAPI" in " ".join(pyproject["project"]["optional-dependencies"]["xenserver"])


async def test_a_wrong_password_is_backend_unavailable_without_the_password(
    server: XapiServer,
) -> None:
    settings = DriverSettings(uri=server.url, username="root", password="hunter2-wrong")
    driver = XenServerDriver(settings)
    with pytest.raises(BackendUnavailable, match="authentication failed") as caught:
        await driver.connect()
    assert "hunter2" not in str(caught.value)
    assert "SESSION_AUTHENTICATION_FAILED" in repr(caught.value.__cause__)


async def test_the_password_comes_from_the_named_environment_variable(
    server: XapiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = DriverSettings(uri=server.url, username="root", extra={"password_env": "XS_PW"})
    with pytest.raises(ConfigError, match="XS_PW"):
        await XenServerDriver(settings).connect()
    monkeypatch.setenv("XS_PW", "secret")
    with structlog.testing.capture_logs() as logs:
        driver = XenServerDriver(settings)
        await driver.connect()
        await driver.close()
    assert "secret" not in repr(logs)
    assert server.xapi.store.sessions == {}  # both sessions logged out on close


async def test_a_bad_power_state_fault_is_an_illegal_transition(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    with pytest.raises(IllegalTransition, match="VM_BAD_POWER_STATE") as caught:
        await driver.reboot_vm(spec.uuid)  # the driver lets XAPI refuse a halted VM
    assert caught.value.__cause__ is not None


async def test_a_host_without_memory_refuses_the_start(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server, memory_mib=8 * 1024)
    await driver.define_vm(spec)
    with pytest.raises(InsufficientCapacity, match="HOST_NOT_ENOUGH_FREE_MEMORY"):
        await driver.start_vm(spec.uuid)
    assert await driver.power_state(spec.uuid) is GuestPower.STOPPED


async def test_a_lost_session_logs_in_again(driver: XenServerDriver, server: XapiServer) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    server.xapi.store.expire_sessions()
    await driver.start_vm(spec.uuid)
    assert await driver.power_state(spec.uuid) is GuestPower.RUNNING


@pytest.mark.parametrize("kind", ["malformed", "garbage"])
async def test_a_malformed_reply_is_a_driver_error_that_says_so(
    driver: XenServerDriver, server: XapiServer, kind: str
) -> None:
    server.inject(kind, method="VM.get_all_records")
    with pytest.raises(DriverError, match="malformed reply") as caught:
        await driver.list_vms()
    assert caught.value.code == "MALFORMED_REPLY"
    assert await driver.list_vms() == []  # the next reply is fine again


async def test_a_dropped_or_slow_reply_is_backend_unavailable(
    driver: XenServerDriver, server: XapiServer
) -> None:
    server.inject("drop", method="VM.get_all_records", count=2)  # xmlrpc retries once
    with pytest.raises(BackendUnavailable):
        await driver.list_vms()
    server.inject("slow", method="VM.get_all_records", delay=1.5)  # the timeout is 1 s
    with pytest.raises(BackendUnavailable):
        await driver.list_vms()


async def test_a_dead_pool_master_is_backend_unavailable(
    driver: XenServerDriver, server: XapiServer
) -> None:
    server.stop()
    with pytest.raises(BackendUnavailable):
        await driver.list_vms()


async def test_a_guest_that_shuts_down_in_time_stops_gracefully(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    assert await driver.stop_vm(spec.uuid, timeout=5) is StopOutcome.GRACEFUL
    assert "Async.VM.clean_shutdown" in server.xapi.calls
    assert "VM.hard_shutdown" not in server.xapi.calls
    assert server.xapi.store.tables["task"] == {}  # no task left behind


async def test_a_guest_that_ignores_shutdown_is_powered_off_at_the_deadline(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    server.xapi.ignore_clean_shutdown.add(server.xapi.vm_uuid_tagged(spec.uuid))
    assert await driver.stop_vm(spec.uuid, timeout=0.3) is StopOutcome.FORCED
    assert "task.cancel" in server.xapi.calls
    assert await driver.power_state(spec.uuid) is GuestPower.STOPPED


async def test_migration_inside_the_pool_moves_the_vm_to_the_other_host(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    other = XenServerDriver(_settings(server, host="xs-host-2"))
    await other.connect()
    try:
        await driver.migrate_vm(spec.uuid, other.settings)
        assert spec.uuid not in [vm.uuid for vm in await driver.list_vms()]
        assert (await other.get_vm(spec.uuid)).power is GuestPower.RUNNING
        await other.stop_vm(spec.uuid, timeout=0)
        assert (await other.get_vm(spec.uuid)).power is GuestPower.STOPPED  # stays there
    finally:
        await other.close()


async def test_destroy_removes_devices_and_snapshots_but_keeps_the_vdi(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    await driver.create_snapshot(spec.uuid, "s1")
    vdis_before = len(server.xapi.store.tables["VDI"])
    await driver.destroy_vm(spec.uuid)
    tables = server.xapi.store.tables
    assert tables["VBD"] == {} and tables["VIF"] == {}
    assert len(tables["VDI"]) == vdis_before - 1  # the snapshot's copy went, the image stayed
    assert [v for v in tables["VM"].values() if v["is_a_snapshot"]] == []


async def test_events_keep_coming_after_the_sessions_were_lost(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    async with driver.subscribe() as events:
        server.xapi.store.expire_sessions()  # the watcher's session too
        await driver.define_vm(spec)
        await driver.start_vm(spec.uuid)
        started = await next_event(events, spec.uuid, kind=EventKind.STARTED)
    assert started.detail.startswith("event.from")


async def test_nics_are_vifs_on_the_named_network(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    with_nic = DomainSpec(
        uuid=spec.uuid,
        name=spec.name,
        vcpus=1,
        memory_mib=64,
        nics=[NicSpec(kind="bridge", source="xenbr0", mac="52:54:00:00:00:01")],
    )
    await driver.define_vm(with_nic)
    (vif,) = server.xapi.store.tables["VIF"].values()
    assert (vif["MAC"], vif["network"]) == ("52:54:00:00:00:01", server.xapi.network)
    unknown = DomainSpec(
        uuid=str(uuid.uuid4()), name="x", vcpus=1, memory_mib=64, nics=[NicSpec(source="nope")]
    )
    with pytest.raises(NotFound, match="nope"):
        await driver.define_vm(unknown)


async def test_a_power_cycle_is_one_xapi_call_per_operation(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    await driver.stop_vm(spec.uuid, timeout=0)
    mark = len(server.xapi.calls)
    await driver.start_vm(spec.uuid)
    assert await driver.stop_vm(spec.uuid, timeout=0) is StopOutcome.FORCED
    calls = [c for c in server.xapi.calls[mark:] if c != "event.from"]
    assert calls == ["VM.start_on", "VM.hard_shutdown"]


async def test_xapi_refusals_give_the_idempotent_outcomes(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    assert await driver.stop_vm(spec.uuid, timeout=0) is StopOutcome.ALREADY_STOPPED
    await driver.start_vm(spec.uuid)
    await driver.start_vm(spec.uuid)  # running: a no-op, read from VM_BAD_POWER_STATE
    await driver.pause_vm(spec.uuid)
    await driver.pause_vm(spec.uuid)
    with pytest.raises(IllegalTransition, match="it is paused"):
        await driver.start_vm(spec.uuid)
    await driver.unpause_vm(spec.uuid)
    await driver.unpause_vm(spec.uuid)
    assert await driver.power_state(spec.uuid) is GuestPower.RUNNING


async def test_a_hard_stop_never_discards_a_vm_suspended_behind_the_drivers_back(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    async with driver.subscribe() as events:
        await driver.start_vm(spec.uuid)  # the client saw it running
        await next_event(events, spec.uuid, kind=EventKind.STARTED)
        ref = server.xapi.store.find("VM", uuid=server.xapi.vm_uuid_tagged(spec.uuid))[0]
        server.xapi.call("VM.suspend", [next(iter(server.xapi.store.sessions)), ref])
        await next_event(events, spec.uuid, kind=EventKind.SUSPENDED)  # it looks first now
    with pytest.raises(IllegalTransition, match="suspended"):
        await driver.stop_vm(spec.uuid, timeout=0)
    assert await driver.power_state(spec.uuid) is GuestPower.SUSPENDED


async def test_a_stale_cached_ref_is_looked_up_again(
    driver: XenServerDriver, server: XapiServer
) -> None:
    spec = _spec(server)
    await driver.define_vm(spec)
    client = driver._client
    assert client is not None
    client._refs[spec.uuid] = "OpaqueRef:gone"
    await driver.start_vm(spec.uuid)
    assert await driver.power_state(spec.uuid) is GuestPower.RUNNING
