"""What only the vSphere driver does, against vcsim: vMotion between two ESXi hosts, TLS
verification, login failures and vSphere faults translated into cloudcore errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from xml.parsers.expat import ExpatError

import pytest

pytest.importorskip("pyVmomi", reason="the vsphere extra (pyvmomi) is not installed")

from pyVmomi import vim, vmodl

from cloudcore.errors import (
    BackendUnavailable,
    Conflict,
    DriverError,
    IllegalTransition,
    NotFound,
    UnsupportedOperation,
)
from hypervisor_drivers.base import DomainSpec, EventKind, GuestPower, HypervisorDriver
from hypervisor_drivers.registry import create_driver
from hypervisor_drivers.vsphere import _connection
from hypervisor_drivers.vsphere._errors import FAULT_RULES, rule_for, translate
from tests import vcsim
from tests.contract.hypervisor.harness import next_event


@pytest.fixture(scope="module")
def sim() -> Iterator[vcsim.Vcsim]:
    with vcsim.running_vcsim("-cluster-host", "2", "-ds", "2") as running:
        yield running


async def _connected(sim: vcsim.Vcsim, host: str, **extra: str) -> HypervisorDriver:
    driver = create_driver("vsphere", sim.settings(host, **extra))
    await driver.connect()
    return driver


@pytest.fixture
async def pair(sim: vcsim.Vcsim) -> AsyncIterator[tuple[HypervisorDriver, HypervisorDriver]]:
    first = await _connected(sim, "DC0_C0_H0")
    second = await _connected(sim, "DC0_C0_H1", datastore="LocalDS_1")
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _spec(name: str) -> DomainSpec:
    import uuid

    return DomainSpec(uuid=str(uuid.uuid4()), name=name, vcpus=1, memory_mib=64)


async def test_vmotion_moves_a_running_vm_to_the_other_host(
    pair: tuple[HypervisorDriver, HypervisorDriver],
) -> None:
    source, target = pair
    spec = _spec("cc-vmotion")
    await source.define_vm(spec)
    await source.start_vm(spec.uuid)
    try:
        async with source.subscribe() as left:
            await source.migrate_vm(spec.uuid, target.settings)
            gone = await next_event(left, spec.uuid, kind=EventKind.UNDEFINED)
            assert gone.detail in {"migrated", "polled"}  # pushed, or found by the sweep
        with pytest.raises(NotFound):
            await source.get_vm(spec.uuid)
        assert spec.uuid not in {vm.uuid for vm in await source.list_vms()}
        assert (await target.get_vm(spec.uuid)).power is GuestPower.RUNNING
        # vcsim 0.24 does not add a relocated VM to the target's host.vm, so neither the
        # target's list_vms nor its event stream sees it arrive (a real vCenter does).
        await target.migrate_vm(spec.uuid, target.settings)  # already there: a no-op
    finally:
        await target.destroy_vm(spec.uuid)
        await source.destroy_vm(spec.uuid)


async def test_a_vm_made_and_moved_away_between_two_waits_is_reported(
    pair: tuple[HypervisorDriver, HypervisorDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """vcsim gathers what happened between two WaitForUpdatesEx calls into one batch and reads
    an entering VM's properties at the end of it: a VM created, started and moved away meanwhile
    enters with the host it went to, followed by its older changes. Hold the watcher between
    two waits (in its sweep) to make that batch every time."""
    source, target = pair
    watcher = source._watcher  # type: ignore[attr-defined]
    held, release = threading.Event(), threading.Event()
    sweep = watcher._sweep

    def held_sweep() -> object:
        held.set()
        release.wait(30)
        return sweep()

    monkeypatch.setattr(watcher, "_sweep", held_sweep)
    spec = _spec("cc-batched")
    try:
        async with source.subscribe() as events:
            assert await asyncio.to_thread(held.wait, 30)
            await source.define_vm(spec)
            await source.start_vm(spec.uuid)
            await source.migrate_vm(spec.uuid, target.settings)
            release.set()
            await next_event(events, spec.uuid, kind=EventKind.DEFINED)
            await next_event(events, spec.uuid, kind=EventKind.STARTED)
            gone = await next_event(events, spec.uuid, kind=EventKind.UNDEFINED)
            assert gone.detail == "migrated"
    finally:
        release.set()
        await target.destroy_vm(spec.uuid)


async def test_two_hosts_of_one_vcenter_share_one_session(
    pair: tuple[HypervisorDriver, HypervisorDriver],
) -> None:
    first, second = pair
    assert first._client is not None and second._client is not None  # type: ignore[attr-defined]
    assert first._client.session is second._client.session  # type: ignore[attr-defined]


async def test_tls_verification_refuses_vcsims_self_signed_certificate(
    sim: vcsim.Vcsim,
) -> None:
    settings = sim.settings("DC0_C0_H0")
    extra = {k: v for k, v in settings.extra.items() if k != "verify_tls"}  # the default: on
    driver = create_driver("vsphere", settings.__class__(uri=settings.uri, extra=extra))
    with pytest.raises(BackendUnavailable, match="certificate failed verification") as refused:
        await driver.connect()
    assert "verify_tls=false" in str(refused.value)


async def test_wrong_credentials_are_refused_without_showing_them(sim: vcsim.Vcsim) -> None:
    os.environ["CLOUDCORE_TEST_VCSIM_WRONG"] = "not-the-password"
    driver = create_driver(
        "vsphere", sim.settings("DC0_C0_H0", password_env="CLOUDCORE_TEST_VCSIM_WRONG")
    )
    with pytest.raises(BackendUnavailable, match="InvalidLogin") as refused:
        await driver.connect()
    assert "not-the-password" not in str(refused.value)
    assert "not-the-password" not in repr(driver.settings)


async def test_an_unknown_host_is_not_found(sim: vcsim.Vcsim) -> None:
    with pytest.raises(NotFound, match="no ESXi host"):
        await _connected(sim, "DC0_C0_H99")


async def test_a_fault_from_vcenter_is_translated_by_type(sim: vcsim.Vcsim) -> None:
    driver = await _connected(sim, "DC0_C0_H0")
    spec = _spec("cc-fault")
    try:
        await driver.define_vm(spec)
        client = driver._client  # type: ignore[attr-defined]
        # ShutdownGuest on a stopped VM: vcsim answers with an InvalidPowerState fault.
        with pytest.raises(
            IllegalTransition, match="InvalidPowerState: the VM is poweredOff"
        ) as raised:
            await driver._call(lambda c: c.request_shutdown(spec.uuid))  # type: ignore[attr-defined]
        assert isinstance(raised.value.__cause__, vim.fault.InvalidPowerState)
        assert client is not None
    finally:
        await driver.destroy_vm(spec.uuid)
        await driver.close()


#: One case per rule of FAULT_RULES: the fault, the error it becomes, a part of the message.
_FAULT_CASES: list[tuple[Exception, type[Exception], str]] = [
    (vmodl.fault.ManagedObjectNotFound(msg="gone"), NotFound, "ManagedObjectNotFound: gone"),
    (vim.fault.NotFound(msg="no such"), NotFound, "NotFound: no such"),
    (vim.fault.FileNotFound(file="[ds] a.vmdk"), NotFound, "FileNotFound"),
    (vim.fault.InvalidState(msg="busy"), IllegalTransition, "InvalidState: busy"),
    (
        vim.fault.InvalidPowerState(requestedState="poweredOn", existingState="poweredOff"),
        IllegalTransition,
        "InvalidPowerState: the VM is poweredOff; the operation needs it poweredOn",
    ),
    (vim.fault.DuplicateName(name="cc"), Conflict, "DuplicateName"),
    (vim.fault.AlreadyExists(name="cc"), Conflict, "AlreadyExists"),
    (vim.fault.FileAlreadyExists(file="a"), Conflict, "FileAlreadyExists"),
    (vmodl.fault.NotSupported(), UnsupportedOperation, "NotSupported"),
    (vmodl.fault.NotImplemented(), UnsupportedOperation, "NotImplemented"),
    (vmodl.fault.MethodNotFound(method="X"), UnsupportedOperation, "MethodNotFound"),
    (vim.fault.NotAuthenticated(), BackendUnavailable, "NotAuthenticated"),
    (vim.fault.InvalidLogin(), BackendUnavailable, "InvalidLogin"),
    (vmodl.fault.HostCommunication(), BackendUnavailable, "HostCommunication"),
    (vmodl.fault.RequestCanceled(), BackendUnavailable, "RequestCanceled"),
]


@pytest.mark.parametrize(
    ("fault", "expected", "message"),
    _FAULT_CASES,
    ids=[type(f).__name__.rpartition(".")[2] for f, _, _ in _FAULT_CASES],
)
def test_each_fault_rule_translates_its_own_fault(
    fault: Exception, expected: type[Exception], message: str
) -> None:
    # The fault's own class decides, not a base class's rule that would give the same error
    # (InvalidPowerState is an InvalidState).
    assert rule_for(fault) is type(fault)
    error = translate(fault)
    assert type(error) is expected
    assert message in str(error)


def test_every_fault_rule_has_its_case() -> None:
    assert [type(f) for f, _, _ in _FAULT_CASES] == list(FAULT_RULES)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (vim.fault.InvalidPowerState(), IllegalTransition),
        (ConnectionRefusedError("refused"), BackendUnavailable),
        (ExpatError("not well-formed (invalid token)"), BackendUnavailable),
        (vim.fault.TaskInProgress(), DriverError),  # no rule: a DriverError with its code
    ],
)
def test_bad_replies_and_unknown_faults_map_to_cloudcore_errors(
    fault: Exception, expected: type[Exception]
) -> None:
    assert type(translate(fault)) is expected


def test_a_slow_login_holds_up_its_own_vcenter_only(
    sim: vcsim.Vcsim, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_uri = "https://vcenter-slow.invalid/sdk"
    entered, release = threading.Event(), threading.Event()
    real_login = _connection._login

    def login(key: _connection.SessionKey, password: str) -> object:
        if key.host == "vcenter-slow.invalid":
            entered.set()
            release.wait(30)
            raise ConnectionRefusedError("the slow vCenter gives up")
        return real_login(key, password)

    monkeypatch.setattr(_connection, "_login", login)
    fast = sim.settings("DC0_C0_H0")
    slow = fast.__class__(uri=slow_uri, extra=fast.extra)
    waiting = threading.Thread(target=lambda: _quietly(_connection.acquire, slow))
    waiting.start()
    try:
        assert entered.wait(30)
        # vcsim's login is not held up by the slow one (a shared lock would hold it 30 s).
        opened: list[_connection.Session] = []
        other = threading.Thread(target=lambda: opened.append(_connection.acquire(fast)))
        other.start()
        other.join(10)
        assert opened, "a login to another vCenter waited for the slow one"
        _connection.release(opened[0])
    finally:
        release.set()
        waiting.join(30)


def _quietly(fn: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(Exception):
        fn(*args)
