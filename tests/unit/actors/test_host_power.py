"""How a host is powered: its power command (run with the host and the state asked in its
environment; a failure says how it exited), else its driver; neither is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.host_power import POWER_COMMAND, PowerUnavailable, set_power
from cloudcore.errors import UnsupportedOperation
from cloudcore.store.records import Host


def _host(**capabilities: str) -> Host:
    return Host(
        id="h1",
        datacenter_id="dc",
        name="h1",
        hypervisor="libvirt",
        cpus=4,
        memory_mib=4096,
        capabilities=capabilities,
    )


async def _no_driver(standby: bool) -> str:
    raise AssertionError("the command is tried first")


async def test_a_power_command_runs_with_the_host_and_the_state_asked(tmp_path: Path) -> None:
    said = tmp_path / "said"
    host = _host(**{POWER_COMMAND: f'echo "$CLOUDCORE_HOST_ID $CLOUDCORE_HOST_POWER" >> {said}'})
    assert await set_power(host, _no_driver, standby=True) == "its power command set it standby"
    assert await set_power(host, _no_driver, standby=False) == "its power command set it on"
    assert said.read_text().splitlines() == ["h1 standby", "h1 on"]


async def test_a_failing_power_command_says_how_it_exited() -> None:
    host = _host(**{POWER_COMMAND: "echo no BMC >&2; exit 3"})
    with pytest.raises(PowerUnavailable, match="exited 3: no BMC"):
        await set_power(host, _no_driver, standby=True)


async def test_without_a_command_the_driver_powers_it_or_it_is_refused_by_name() -> None:
    async def simulated(standby: bool) -> str:
        return f"simulated standby={standby}"

    assert await set_power(_host(), simulated, standby=True) == "simulated standby=True"

    async def cannot(standby: bool) -> str:
        raise UnsupportedOperation("the vsphere driver does not support host_power")

    with pytest.raises(PowerUnavailable, match=f"h1 has no {POWER_COMMAND} capability"):
        await set_power(_host(), cannot, standby=False)
