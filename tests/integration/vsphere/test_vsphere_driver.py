"""What only the vSphere driver does, against vcsim: vMotion between two ESXi hosts, TLS
verification, login failures and vSphere faults translated into cloudcore errors."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from xml.parsers.expat import ExpatError

import pytest

pytest.importorskip("pyVmomi", reason="the vsphere extra (pyvmomi) is not installed")

from pyVmomi import vim, vmodl

from cloudcore.errors import BackendUnavailable, Conflict, IllegalTransition, NotFound
from hypervisor_drivers.base import DomainSpec, EventKind, GuestPower, HypervisorDriver
from hypervisor_drivers.registry import create_driver
from hypervisor_drivers.vsphere._errors import translate
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


# pyvmomi's version probe at login leaves a socket to the GC when the login is dropped at once.
@pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
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
        with pytest.raises(IllegalTransition, match="InvalidPowerState") as raised:
            await driver._call(lambda c: c.request_shutdown(spec.uuid))  # type: ignore[attr-defined]
        assert isinstance(raised.value.__cause__, vim.fault.InvalidPowerState)
        assert client is not None
    finally:
        await driver.destroy_vm(spec.uuid)
        await driver.close()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (vim.fault.InvalidPowerState(), IllegalTransition),
        (vmodl.fault.ManagedObjectNotFound(), NotFound),
        (vim.fault.DuplicateName(), Conflict),
        (vim.fault.NotAuthenticated(), BackendUnavailable),
        (ConnectionRefusedError("refused"), BackendUnavailable),
        (ExpatError("not well-formed (invalid token)"), BackendUnavailable),
    ],
)
def test_faults_and_bad_replies_map_to_cloudcore_errors(
    fault: Exception, expected: type[Exception]
) -> None:
    assert type(translate(fault)) is expected
