"""The Hyper-V driver against the WinRM simulator: what the contract suite cannot show.

Credentials refused, PowerShell error records translated, malformed and lost replies, names that
try to inject PowerShell, the graceful-stop deadline, migration between two hosts. The simulator
is in-process (``tests/simulators/winrm``) on a loopback port, driven by the real pywinrm.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from importlib import import_module
from pathlib import Path

import pytest

from cloudcore.errors import (
    BackendUnavailable,
    DriverError,
    IllegalTransition,
    InsufficientCapacity,
    NotFound,
)
from hypervisor_drivers.base import DomainSpec, FileDisk, GuestPower, NicSpec, StopOutcome
from hypervisor_drivers.hyperv import HyperVDriver
from tests.contract.hypervisor.conftest import hyperv_settings
from tests.simulators.winrm import HyperVHost, WinRMServer, running_winrm

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def server() -> Iterator[WinRMServer]:
    with running_winrm(HyperVHost("HV01", memory_kib=4 * 1024 * 1024)) as server:
        yield server


@pytest.fixture
async def driver(server: WinRMServer) -> AsyncIterator[HyperVDriver]:
    driver = HyperVDriver(hyperv_settings(server.url, timeout="1", poll_interval="60"))
    await driver.connect()
    yield driver
    await driver.close()


def _spec(name: str | None = None, memory_mib: int = 256) -> DomainSpec:
    vm = str(uuid.uuid4())
    disk = FileDisk(path=f"C:\\VMs\\{vm}.vhdx", serial="root")
    return DomainSpec(
        uuid=vm, name=name or f"vm-{vm[:8]}", vcpus=1, memory_mib=memory_mib, disks=[disk]
    )


def test_the_entry_point_names_the_driver_class() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    points = pyproject["project"]["entry-points"]["cloudcore.hypervisor_drivers"]
    module, _, attribute = points["hyperv"].partition(":")
    assert getattr(import_module(module), attribute) is HyperVDriver


async def test_refused_credentials_are_backend_unavailable(server: WinRMServer) -> None:
    settings = hyperv_settings(server.url)
    driver = HyperVDriver(type(settings)(**{**_fields(settings), "password": "hunter2-wrong"}))
    with pytest.raises(BackendUnavailable, match="401") as caught:
        await driver.connect()
    assert "hunter2" not in str(caught.value)


def _fields(settings: object) -> dict[str, object]:
    names = ("uri", "username", "password", "extra")
    return {name: getattr(settings, name) for name in names}


async def test_a_state_refused_by_hyperv_is_an_illegal_transition(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    spec = _spec()
    await driver.define_vm(spec)
    with pytest.raises(IllegalTransition, match="InvalidState") as caught:
        await driver.reboot_vm(spec.uuid)  # the driver lets Restart-VM refuse a VM that is off
    assert "InvalidOperation" in str(caught.value)


async def test_a_host_without_memory_refuses_the_start(driver: HyperVDriver) -> None:
    spec = _spec(memory_mib=8 * 1024)
    await driver.define_vm(spec)
    with pytest.raises(InsufficientCapacity, match="OutOfMemory"):
        await driver.start_vm(spec.uuid)


async def test_a_name_cannot_inject_powershell(driver: HyperVDriver, server: WinRMServer) -> None:
    victim = _spec()
    await driver.define_vm(victim)
    evil = "x'; Get-VM | Remove-VM -Force; '\" $(Remove-VM) `n"
    spec = _spec(name=evil)
    vm = await driver.define_vm(spec)
    assert vm.name == evil
    assert {v.name for v in await driver.list_vms()} == {victim.name, evil}
    assert all(evil not in script for script in server.host.scripts)  # passed as data only


async def test_a_reply_that_is_not_json_is_a_clear_driver_error(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    server.inject("malformed")
    with pytest.raises(DriverError, match="malformed reply from Hyper-V: not JSON") as caught:
        await driver.list_vms()
    assert caught.value.code == "MALFORMED_REPLY"
    assert await driver.list_vms() == []


async def test_a_record_with_a_wrong_field_names_the_field(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    spec = _spec()
    await driver.define_vm(spec)
    next(iter(server.host.vms.values()))["ProcessorCount"] = "two"
    with pytest.raises(DriverError, match="ProcessorCount='two', expected int"):
        await driver.get_vm(spec.uuid)


async def test_a_wsman_fault_and_lost_replies_are_translated(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    server.inject("http500")
    with pytest.raises(DriverError, match="WinRM fault"):
        await driver.list_vms()
    server.inject("drop")
    with pytest.raises(BackendUnavailable):
        await driver.list_vms()
    server.slow_delay = 3.0  # the read timeout is 2 s
    server.inject("slow")
    with pytest.raises(BackendUnavailable):
        await driver.list_vms()


async def test_an_unknown_vm_is_not_found(driver: HyperVDriver) -> None:
    with pytest.raises(NotFound):
        await driver.pause_vm(str(uuid.uuid4()))


async def test_the_stop_deadline_turns_off_a_guest_that_ignores_shutdown(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    polite, deaf = _spec(), _spec()
    for spec in (polite, deaf):
        await driver.define_vm(spec)
        await driver.start_vm(spec.uuid)
    server.host.ignore_shutdown.add(deaf.name)
    assert await driver.stop_vm(polite.uuid, timeout=5) is StopOutcome.GRACEFUL
    assert await driver.stop_vm(deaf.uuid, timeout=0.3) is StopOutcome.FORCED
    assert any("Stop-VM -TurnOff" in s for s in server.host.scripts)
    assert await driver.power_state(deaf.uuid) is GuestPower.STOPPED


async def test_move_vm_hands_the_vm_to_the_other_host(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    other_host = HyperVHost("HV02", peers=server.host.peers)
    with running_winrm(other_host) as other_server:
        other = HyperVDriver(hyperv_settings(other_server.url, computer_name="HV02"))
        await other.connect()
        try:
            spec = _spec()
            await driver.define_vm(spec)
            await driver.start_vm(spec.uuid)
            await driver.migrate_vm(spec.uuid, other.settings)
            assert await driver.list_vms() == []
            assert (await other.get_vm(spec.uuid)).power is GuestPower.RUNNING
        finally:
            await other.close()


async def test_a_shell_the_server_forgot_is_opened_again(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    assert await driver.list_vms() == []
    assert len(server.shells) == 1  # one shell kept open between scripts
    server.shells.clear()  # the server restarted, or the shell idled out
    assert await driver.list_vms() == []
    assert len(server.shells) == 1
    await driver.close()
    assert server.shells == {}  # closed with the driver


async def test_nics_are_network_adapters_on_the_named_switch(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    vm = str(uuid.uuid4())
    spec = DomainSpec(
        uuid=vm,
        name="with-nic",
        vcpus=2,
        memory_mib=128,
        nics=[
            NicSpec(source="External", mac="52:54:00:0a:0b:0c"),
            NicSpec(source="br-lan", extra={"hyperv.switch": "Internal"}),
        ],
    )
    info = await driver.define_vm(spec)
    assert (info.uuid, info.vcpus, info.memory_mib) == (vm, 2, 128)
    (simulated,) = server.host.vms.values()
    assert [(n["SwitchName"], n["MacAddress"][:6]) for n in simulated["nics"]] == [
        ("External", "525400"),
        ("Internal", "00155D"),  # no MAC given: Hyper-V makes one
    ]
    assert simulated["nics"][0]["MacAddress"] == "5254000A0B0C"


async def test_start_and_hard_stop_are_one_script_each_with_the_state_guard_inside(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    spec = _spec()
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    await driver.stop_vm(spec.uuid, timeout=0)
    mark = len(server.host.scripts)
    await driver.start_vm(spec.uuid)
    await driver.start_vm(spec.uuid)  # running: the guard lets nothing through
    assert await driver.stop_vm(spec.uuid, timeout=0) is StopOutcome.FORCED
    assert await driver.stop_vm(spec.uuid, timeout=0) is StopOutcome.ALREADY_STOPPED
    assert len(server.host.scripts) - mark == 4


async def test_a_saved_vm_is_neither_started_nor_discarded(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    spec = _spec()
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    await driver.suspend_vm(spec.uuid)
    with pytest.raises(IllegalTransition, match="suspended"):
        await driver.start_vm(spec.uuid)
    with pytest.raises(IllegalTransition, match="suspended"):
        await driver.stop_vm(spec.uuid, timeout=0)
    assert await driver.power_state(spec.uuid) is GuestPower.SUSPENDED


async def test_a_vm_recreated_with_a_new_id_is_looked_up_again(
    driver: HyperVDriver, server: WinRMServer
) -> None:
    spec = _spec()
    await driver.define_vm(spec)
    await driver.start_vm(spec.uuid)
    await driver.stop_vm(spec.uuid, timeout=0)
    with server.host.lock:  # the same VM under another Id, as after an export and import
        (old_id,) = [i for i, vm in server.host.vms.items() if vm["Name"] == spec.name]
        vm = server.host.vms.pop(old_id)
        server.host.vms["0000aaaa-0000-0000-0000-000000000001"] = {
            **vm,
            "Id": "0000aaaa-0000-0000-0000-000000000001",
        }
    await driver.start_vm(spec.uuid)
    assert await driver.power_state(spec.uuid) is GuestPower.RUNNING
