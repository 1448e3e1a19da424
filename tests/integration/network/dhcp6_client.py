"""A minimal DHCPv6 client (RFC 8415: Solicit, Advertise, Request, Reply) for one interface,
run by the tests inside a network namespace: ``python dhcp6_client.py IFACE MAC``. It prints
the address the server gave (or exits 1 after its deadline). No DHCPv6 client is installed on
this machine; this one is what a guest's would do, with a DUID-LL made of the MAC."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
import time

SOLICIT, ADVERTISE, REQUEST, REPLY = 1, 2, 3, 7
CLIENTID, SERVERID, IA_NA, IAADDR, ELAPSED = 1, 2, 3, 5, 8
SERVERS = "ff02::1:2"


def _option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def _message(kind: int, xid: bytes, mac: bytes, server: bytes | None = None) -> bytes:
    duid = struct.pack("!HH", 3, 1) + mac  # DUID-LL, Ethernet
    options = _option(CLIENTID, duid) + _option(ELAPSED, b"\0\0")
    options += _option(IA_NA, struct.pack("!III", 1, 0, 0))
    if server is not None:
        options += _option(SERVERID, server)
    return bytes([kind]) + xid + options


def _options(data: bytes) -> dict[int, bytes]:
    found, at = {}, 0
    while at + 4 <= len(data):
        code, length = struct.unpack("!HH", data[at : at + 4])
        found[code] = data[at + 4 : at + 4 + length]
        at += 4 + length
    return found


def _address(options: dict[int, bytes]) -> str | None:
    ia = options.get(IA_NA)
    if ia is None or len(ia) < 12:
        return None
    inner = _options(ia[12:])
    if IAADDR not in inner:
        return None
    return str(ipaddress.IPv6Address(inner[IAADDR][:16]))


def _exchange(
    sock: socket.socket, index: int, message: bytes, want: int, deadline: float
) -> dict[int, bytes]:
    while time.monotonic() < deadline:
        sock.sendto(message, (SERVERS, 547, 0, index))
        sock.settimeout(1.0)
        try:
            data, _ = sock.recvfrom(4096)
        except TimeoutError:
            continue
        if data[0] == want and data[1:4] == message[1:4]:
            return _options(data[4:])
    raise TimeoutError(f"no answer of type {want}")


def main(iface: str, mac_text: str, seconds: float = 20.0) -> int:
    mac = bytes.fromhex(mac_text.replace(":", ""))
    index = socket.if_nametoindex(iface)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.bind(("::", 546))
    deadline = time.monotonic() + seconds
    xid = os.urandom(3)
    advertised = _exchange(sock, index, _message(SOLICIT, xid, mac), ADVERTISE, deadline)
    server = advertised[SERVERID]
    replied = _exchange(sock, index, _message(REQUEST, xid, mac, server), REPLY, deadline)
    address = _address(replied)
    if address is None:
        print("no address in the reply", file=sys.stderr)
        return 1
    print(address)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
