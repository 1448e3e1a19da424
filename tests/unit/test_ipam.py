"""Address arithmetic without a store: pools, picking, MACs, and dnsmasq's command line and
leases file as the network actor writes and reads them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from actors.network import _parse_leases
from cloudcore import ipam
from cloudcore.errors import AddressesExhausted, InvalidRecord
from cloudcore.store.records import AddressRange, Network


def _net(cidr: str, **fields: object) -> Network:
    return Network(id="net-1", datacenter_id="dc", name="n", cidr=cidr, **fields)  # type: ignore[arg-type]


def test_a_big_ipv6_network_picks_fast_and_inside_its_cidr() -> None:
    net = _net("fd00::/64")
    ipam.check_network(net)
    taken: set[str] = set()
    for _ in range(200):
        taken.add(ipam.pick(net, taken))
    assert len(taken) == 200 and all(a.startswith("fd00::") for a in taken)
    assert ipam.free_count(net, taken) == 2**64 - 1 - 200


def test_picking_skips_taken_reserved_and_ends_in_exhaustion() -> None:
    net = _net(
        "10.0.0.0/29",
        gateway="10.0.0.1",
        excluded=("10.0.0.6",),
        ranges=(AddressRange(first="10.0.0.1", last="10.0.0.6"),),
    )
    rng = random.Random(7)
    got: set[str] = set()
    while ipam.free_count(net, got):
        got.add(ipam.pick(net, got, rng))
    assert got == {"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}
    with pytest.raises(AddressesExhausted, match="net-1"):
        ipam.pick(net, got, rng)


def test_an_address_is_canonical_or_refused() -> None:
    net = _net("fd00::/120")
    assert ipam.check_address(net, "FD00:0::0a") == "fd00::a"
    with pytest.raises(InvalidRecord, match=r"^address:"):
        ipam.check_address(net, "fd00::1:0")


def test_macs_keep_their_prefix_and_a_multicast_prefix_is_refused() -> None:
    assert ipam.new_mac("52:54:00").startswith("52:54:00:")
    assert len(ipam.new_mac("02")) == 17
    with pytest.raises(InvalidRecord, match="mac_prefix"):
        ipam.new_mac("01:00:5e")


def test_the_leases_file_is_read_as_dnsmasq_writes_it(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    assert _parse_leases(leases) == ()
    leases.write_text(
        "1764632400 52:54:00:aa:bb:cc 10.77.0.42 * 01:52:54:00:aa:bb:cc\nduid 00:01:00:01:2c:00\n"
    )
    [lease] = _parse_leases(leases)
    assert (lease.mac, lease.address, lease.expires) == (
        "52:54:00:aa:bb:cc",
        "10.77.0.42",
        1764632400,
    )
