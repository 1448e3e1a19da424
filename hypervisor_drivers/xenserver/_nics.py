"""A XenServer VM's NICs (VIFs): listed, hot-plugged and removed.

A cloud network is the XenServer network named by its ``extra["xenserver.network"]`` (name
label, uuid or bridge), else by its bridge. A VIF made while the VM runs is plugged; one removed
is unplugged first (XAPI refuses to destroy an attached VIF).
"""

from __future__ import annotations

from typing import Any

from cloudcore.errors import NotFound
from hypervisor_drivers.types import GuestPower, NicInfo, NicSpec

__all__ = ["NETWORK", "attach", "detach", "list_nics", "network_ref", "vif_record"]

#: The key of a cloud network's ``extra`` naming its XenServer network.
NETWORK = "xenserver.network"


def network_ref(x: Any, nic: NicSpec) -> str:
    name = nic.name_on(NETWORK)
    for ref, network in x.network.get_all_records().items():
        if name in (network["name_label"], network["uuid"], network.get("bridge")):
            return str(ref)
    raise NotFound(f"no XenServer network named {name!r}")


def vif_record(vm: str, network: str, device: int, nic: NicSpec) -> dict[str, Any]:
    return {
        "device": str(device),
        "network": network,
        "VM": vm,
        "MAC": (nic.mac or "").lower(),
        "MTU": "1500",
        "other_config": {},
        "qos_algorithm_type": "",
        "qos_algorithm_params": {},
    }


def _vifs(x: Any, vm: str) -> list[tuple[str, dict[str, Any]]]:
    vifs = [(str(ref), x.VIF.get_record(ref)) for ref in x.VM.get_VIFs(vm)]
    return sorted(vifs, key=lambda v: int(v[1]["device"] or 0))


def list_nics(x: Any, vm: str) -> list[NicInfo]:
    names = {}
    infos = []
    for _, vif in _vifs(x, vm):
        network = vif["network"]
        if network not in names:
            names[network] = str(x.network.get_name_label(network))
        infos.append(NicInfo(mac=str(vif["MAC"]).lower(), source=names[network]))
    return infos


def attach(x: Any, vm: str, power: GuestPower, nic: NicSpec) -> None:
    vifs = _vifs(x, vm)
    if any(str(v["MAC"]).lower() == (nic.mac or "").lower() for _, v in vifs):
        return
    used = {int(v["device"] or 0) for _, v in vifs}
    device = next(i for i in range(len(used) + 1) if i not in used)
    vif = x.VIF.create(vif_record(vm, network_ref(x, nic), device, nic))
    if power is GuestPower.RUNNING:
        x.VIF.plug(vif)


def detach(x: Any, vm: str, mac: str) -> None:
    for ref, vif in _vifs(x, vm):
        if str(vif["MAC"]).lower() == mac.lower():
            if vif.get("currently_attached"):
                x.VIF.unplug(ref)
            x.VIF.destroy(ref)
