"""A Hyper-V VM's network adapters: listed, added and removed (Hyper-V adds and removes them
on a running generation 2 VM).

A cloud network is the virtual switch named by its ``extra["hyperv.switch"]``, else by its
bridge. Hyper-V writes a MAC as 12 hex digits (``525400AABBCC``); cloudcore as
``52:54:00:aa:bb:cc``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypervisor_drivers.types import NicInfo, NicSpec

__all__ = ["SWITCH", "add_lines", "attach", "detach", "from_hyperv", "list_nics", "to_hyperv"]

#: The key of a cloud network's ``extra`` naming its Hyper-V virtual switch.
SWITCH = "hyperv.switch"
_BY_ID = "$vm = Get-VM -Id $a.id"
Many = Callable[[list[str], dict[str, Any], str], list[dict[str, Any]]]


def to_hyperv(mac: str) -> str:
    return mac.replace(":", "").replace("-", "").upper()


def from_hyperv(mac: str) -> str:
    digits = mac.replace(":", "").replace("-", "").lower()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def add_lines(nics: list[NicSpec]) -> tuple[list[str], dict[str, Any]]:
    """Script lines (and their arguments) that add ``nics`` to ``$vm``."""
    lines, args = [], {}
    for i, nic in enumerate(nics):
        args[f"nic{i}"] = nic.name_on(SWITCH)
        line = f"$vm | Add-VMNetworkAdapter -SwitchName $a.nic{i}"
        if nic.mac is not None:
            args[f"mac{i}"] = to_hyperv(nic.mac)
            line += f" -StaticMacAddress $a.mac{i}"
        lines.append(line)
    return lines, args


def list_nics(many: Many, vm_id: str) -> list[NicInfo]:
    adapters = many(
        [
            _BY_ID,
            "$vm | Get-VMNetworkAdapter | Select-Object SwitchName, MacAddress"
            " | ConvertTo-Json -Compress",
        ],
        {"id": vm_id},
        "a network adapter",
    )
    return [
        NicInfo(mac=from_hyperv(str(a.get("MacAddress") or "")), source=str(a.get("SwitchName")))
        for a in adapters
    ]


def attach(many: Many, vm_id: str, nic: NicSpec) -> None:
    if any(n.mac == (nic.mac or "").lower() for n in list_nics(many, vm_id)):
        return
    lines, args = add_lines([nic])
    many([_BY_ID, *lines], {"id": vm_id, **args}, "a network adapter")


def detach(many: Many, vm_id: str, mac: str) -> None:
    many(
        [
            _BY_ID,
            "$vm | Get-VMNetworkAdapter | Where-Object -Property MacAddress -EQ -Value $a.mac"
            " | Remove-VMNetworkAdapter",
        ],
        {"id": vm_id, "mac": to_hyperv(mac)},
        "a network adapter",
    )
