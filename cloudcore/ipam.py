"""Address arithmetic of a network, with no I/O: what a network definition must satisfy, which
addresses it may hand out, and MACs from a prefix.

The store (:mod:`cloudcore.store._ipam`) decides who holds what, in a transaction; this module
only says what is valid and what is free given what is taken. Errors are
:class:`~cloudcore.errors.InvalidRecord` naming the field (``cidr``, ``gateway``,
``ranges[1]``, ``address``...), so the API answers 422 with it.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import random
import re
from collections.abc import Collection, Iterable

from cloudcore.errors import AddressesExhausted, InvalidRecord
from cloudcore.store.records import Network, NetworkKind

__all__ = [
    "check_address",
    "check_mac_prefix",
    "check_network",
    "free_count",
    "new_mac",
    "overlapping",
    "pick",
    "pool",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAC_PREFIX = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){0,4}$")


def _cidr(network: Network) -> Net:
    try:
        return ipaddress.ip_network(network.cidr, strict=True)
    except ValueError as exc:
        raise InvalidRecord(
            f"cidr: {network.cidr!r} is not a network address/prefix ({exc})"
        ) from None


def _address(text: str, field: str, net: Net) -> Address:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidRecord(f"{field}: {text!r} is not an IP address") from None
    if address.version != net.version or address not in net:
        raise InvalidRecord(f"{field}: {text} is outside the network's cidr {net}")
    return address


def _hosts(net: Net) -> tuple[int, int]:
    """First and last host address of ``net``, as integers (not the network and broadcast
    addresses of an IPv4 network larger than a /31; not the subnet-router anycast of IPv6)."""
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.version == 4 and net.prefixlen <= 30:
        return first + 1, last - 1
    if net.version == 6 and net.prefixlen <= 126:
        return first + 1, last
    return first, last


def pool(network: Network) -> list[tuple[int, int]]:
    """The segments (first, last as integers, both included) addresses are handed out from:
    the network's ranges, or all its host addresses."""
    net = _cidr(network)
    if not network.ranges:
        return [_hosts(net)]
    return sorted(
        (int(ipaddress.ip_address(r.first)), int(ipaddress.ip_address(r.last)))
        for r in network.ranges
    )


def _reserved(network: Network) -> set[int]:
    """Addresses never handed out: the gateway and the excluded ones."""
    reserved = {int(ipaddress.ip_address(a)) for a in network.excluded}
    if network.gateway:
        reserved.add(int(ipaddress.ip_address(network.gateway)))
    return reserved


def check_network(network: Network) -> None:
    """Raise InvalidRecord naming the first field of ``network`` that is wrong."""
    net = _cidr(network)
    if network.kind is NetworkKind.VLAN:
        if network.vlan is None or not 1 <= network.vlan <= 4094:
            raise InvalidRecord(
                f"vlan: a vlan network needs an id from 1 to 4094, not {network.vlan}"
            )
    elif network.vlan is not None:
        raise InvalidRecord("vlan: only a network of kind 'vlan' has a vlan id")
    first, last = _hosts(net)
    if network.gateway is not None:
        gateway = int(_address(network.gateway, "gateway", net))
        if not first <= gateway <= last:
            raise InvalidRecord(f"gateway: {network.gateway} is not a host address of {net}")
    for i, dns in enumerate(network.dns):
        try:
            ipaddress.ip_address(dns)
        except ValueError:
            raise InvalidRecord(f"dns[{i}]: {dns!r} is not an IP address") from None
    for i, excluded in enumerate(network.excluded):
        _address(excluded, f"excluded[{i}]", net)
    _check_ranges(network, net, first, last)
    if free_count(network, ()) < 1:
        raise InvalidRecord("ranges: the network has no address to hand out")


def _check_ranges(network: Network, net: Net, first: int, last: int) -> None:
    spans: list[tuple[int, int, int]] = []
    for i, r in enumerate(network.ranges):
        lo = int(_address(r.first, f"ranges[{i}].first", net))
        hi = int(_address(r.last, f"ranges[{i}].last", net))
        if lo > hi:
            raise InvalidRecord(f"ranges[{i}]: first {r.first} is after last {r.last}")
        if lo < first or hi > last:
            raise InvalidRecord(f"ranges[{i}]: {r.first}-{r.last} does not fit the hosts of {net}")
        spans.append((lo, hi, i))
    spans.sort()
    for (_, hi, i), (lo, _, j) in itertools.pairwise(spans):
        if lo <= hi:
            raise InvalidRecord(f"ranges[{j}]: overlaps ranges[{i}]")


def overlapping(network: Network, others: Iterable[Network]) -> Network | None:
    """The first of ``others`` whose CIDR overlaps ``network``'s, or None."""
    net = _cidr(network)
    for other in others:
        if other.id == network.id:
            continue
        theirs = ipaddress.ip_network(other.cidr, strict=False)
        if theirs.version == net.version and theirs.overlaps(net):
            return other
    return None


def check_address(network: Network, text: str) -> str:
    """``text`` in its canonical form if the network may hand it out; else InvalidRecord
    naming ``address`` and why."""
    net = _cidr(network)
    value = int(_address(text, "address", net))
    canonical = str(
        ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)
    )
    if value in _reserved(network):
        raise InvalidRecord(f"address: {canonical} is reserved (the gateway or excluded)")
    if not any(lo <= value <= hi for lo, hi in pool(network)):
        raise InvalidRecord(f"address: {canonical} is outside the network's allocation ranges")
    return canonical


def _text(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _taken_in_pool(network: Network, taken: Collection[str]) -> set[int]:
    segments = pool(network)
    blocked = {int(ipaddress.ip_address(a)) for a in taken} | _reserved(network)
    return {v for v in blocked if any(lo <= v <= hi for lo, hi in segments)}


def free_count(network: Network, taken: Collection[str]) -> int:
    """How many addresses the network could still hand out, with ``taken`` held."""
    size = sum(hi - lo + 1 for lo, hi in pool(network))
    return size - len(_taken_in_pool(network, taken))


def pick(network: Network, taken: Collection[str], rng: random.Random | None = None) -> str:
    """A free address, chosen at random (so concurrent callers seldom race for the same one).
    Raises AddressesExhausted if none is left."""
    segments = pool(network)
    blocked = _taken_in_pool(network, taken)
    size = sum(hi - lo + 1 for lo, hi in segments)
    if size - len(blocked) < 1:
        raise AddressesExhausted(
            f"network {network.id} has no free address: {len(blocked)} of {size} are held, "
            "reserved or resting in quarantine"
        )
    offset = (rng or _rng).randrange(size)
    version = _cidr(network).version
    for step in range(size):  # ends within len(blocked) + 1 steps: a free one exists
        value = _at(segments, (offset + step) % size)
        if value not in blocked:
            return _text(version, value)
    raise AssertionError("unreachable: a free address was counted")  # pragma: no cover


def _at(segments: list[tuple[int, int]], index: int) -> int:
    for lo, hi in segments:
        if index <= hi - lo:
            return lo + index
        index -= hi - lo + 1
    raise IndexError(index)


_rng = random.Random(int.from_bytes(os.urandom(8)))


def check_mac_prefix(prefix: str) -> str:
    """``prefix`` in lower case if it is one to five octets ``aa:bb:...``, the first a unicast
    one; else InvalidRecord."""
    prefix = prefix.lower()
    if not _MAC_PREFIX.match(prefix) or int(prefix[:2], 16) & 1:
        raise InvalidRecord(
            f"mac_prefix: {prefix!r} is not 1 to 5 octets like '52:54:00' with a unicast first"
        )
    return prefix


def new_mac(prefix: str) -> str:
    """A MAC made of ``prefix`` and random octets (unique only with the store's check)."""
    prefix = check_mac_prefix(prefix)
    octets = 6 - (len(prefix) + 1) // 3
    tail = ":".join(f"{b:02x}" for b in os.urandom(octets))
    return f"{prefix}:{tail}"
