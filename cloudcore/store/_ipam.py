"""Networks and their addresses (IPAM), in portable SQL.

An address is held by a row of ``ip_allocations`` keyed by (network, address): the primary key
is what makes one address held once, under any concurrency, on both backends. A taker inserts
with ``ON CONFLICT DO NOTHING``; a taker that lost the race gets no row and tries another
address (or, when it asked for that one, is told who holds it). A released address keeps its
row with ``released_at`` set, so it is not handed out again before its network's quarantine has
passed; then the next taker deletes and reinserts it in its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from cloudcore import ipam
from cloudcore.errors import (
    AlreadyExists,
    CloudcoreError,
    Conflict,
    InvalidRecord,
    NotFound,
    VersionConflict,
)
from cloudcore.store import _outbox
from cloudcore.store._conn import Conn, now
from cloudcore.store._domain import DomainOps
from cloudcore.store._table import table_of, validate
from cloudcore.store.records import VM, IpAllocation, Network, OutboxEvent

__all__ = ["DEFAULT_MAC_PREFIX", "PUBLIC_IPS", "IpamOps", "nic_event"]

#: The MAC prefix NICs get when the caller names none (QEMU's, as ``network.mac_prefix``).
DEFAULT_MAC_PREFIX = "52:54:00"

#: The quota resource counting the addresses a tenant holds in public networks.
PUBLIC_IPS = "public_ips"

_IP_COLS = "network_id, address, vm_id, tenant_id, mac, created_at, released_at"
_HELD = "released_at IS NULL"
#: Tries for a free address when concurrent takers keep winning the one picked.
_ATTEMPTS = 64
#: Random addresses tried before the held ones are read (a miss costs two short statements).
_BLIND = 4


def _allocation(row: Any) -> IpAllocation:
    return msgspec.convert(dict(row), IpAllocation)


class IpamOps(DomainOps):
    """Networks created with their checks, and addresses taken, released and listed."""

    async def create_network(
        self, network: Network, *, events: Sequence[OutboxEvent] = ()
    ) -> Network:
        ipam.check_network(network)
        table = table_of(Network)
        stamp = now()
        stored = msgspec.structs.replace(
            validate(network), version=1, created_at=stamp, updated_at=stamp
        )
        stamped = _outbox.stamp(events, stamp)
        async with self._transaction() as conn:
            # Locks the datacenter's row (PostgreSQL), so two creates in one datacenter are
            # checked for overlap one after the other; SQLite runs one writer at a time anyway.
            locked = await conn.fetchrow(
                "UPDATE datacenters SET version = version WHERE id = $1 RETURNING id",
                stored.datacenter_id,
            )
            if locked is None:
                raise InvalidRecord(f"datacenter_id: no datacenter {stored.datacenter_id!r}")
            missing = await table.missing_reference(conn, stored)
            if missing is not None:
                raise missing
            rows = await conn.fetch(
                f"{table.select} WHERE datacenter_id = $1", stored.datacenter_id
            )
            others = [table.decode(r) for r in rows]
            for other in others:
                if other.name == stored.name and other.tenant_id == stored.tenant_id:
                    raise AlreadyExists(
                        f"name: network {other.id} is already called {other.name!r}"
                    )
            clash = ipam.overlapping(stored, others)
            if clash is not None:
                raise InvalidRecord(
                    f"cidr: {stored.cidr} overlaps network {clash.id} ({clash.cidr}) of the "
                    "same datacenter"
                )
            await conn.execute(table.insert_sql, *table.encode(stored))
            await _outbox.insert(conn, stamped)
        if stamped:
            self._outbox_written()
        return stored

    async def delete_network(self, network_id: str, *, events: Sequence[OutboxEvent] = ()) -> None:
        stamped = _outbox.stamp(events)
        async with self._transaction() as conn:
            held = await conn.fetchrow(
                f"SELECT address, vm_id, tenant_id FROM ip_allocations WHERE network_id = $1 "
                f"AND {_HELD} ORDER BY address LIMIT 1",
                network_id,
            )
            if held is not None:
                raise Conflict(
                    f"network {network_id} is in use: {held['address']} is held by {_holder(held)}"
                )
            await conn.execute("DELETE FROM ip_allocations WHERE network_id = $1", network_id)
            row = await conn.fetchrow("DELETE FROM networks WHERE id = $1 RETURNING id", network_id)
            if row is None:
                raise NotFound(f"Network {network_id!r} not found")
            await _outbox.insert(conn, stamped)
        if stamped:
            self._outbox_written()

    async def allocate_ip(
        self,
        network_id: str,
        address: str | None = None,
        *,
        vm_id: str | None = None,
        tenant_id: str | None = None,
        mac: str | None = None,
        mac_prefix: str | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> IpAllocation:
        if address is not None and not address:
            raise InvalidRecord("address: an IP allocation needs an address")
        if mac is not None and mac_prefix is not None:
            raise InvalidRecord("mac: give a MAC or a prefix to make one from, not both")
        stamped = _outbox.stamp(events)
        async with self._transaction() as conn:
            network = await self._network(conn, network_id)
            if network.tenant_id is not None and tenant_id not in (None, network.tenant_id):
                raise InvalidRecord(
                    f"network_id: network {network_id} is another tenant's private network"
                )
            held = await self._take(conn, network, address, vm_id, tenant_id, mac, mac_prefix)
            if network.tenant_id is None and tenant_id is not None:
                await self._consume(conn, tenant_id, {PUBLIC_IPS: 1})
            given = {"address": held.address, "mac": held.mac}
            await _outbox.insert(
                conn,
                [msgspec.structs.replace(e, data={**e.data, **given}) for e in stamped],
            )
        if stamped:
            self._outbox_written()
        return held

    async def _attach_nics(self, conn: Conn, vm: VM, mac_prefix: str) -> list[IpAllocation]:
        """Hold the addresses and MACs of the NICs ``vm`` is created with, in the caller's
        transaction (the VM's create), each written with its ``nic.added`` event. Errors name
        the NIC's field (``nics[1].network_id``, ``nics[0].address``)."""
        held: list[IpAllocation] = []
        for i, nic in enumerate(vm.spec.nics):
            row = await conn.fetchrow(table_of(Network).get_sql, nic.network_id)
            network = None if row is None else table_of(Network).decode(row)
            if network is None or network.tenant_id not in (None, vm.tenant_id):
                # another tenant's private network answers as one that does not exist
                raise InvalidRecord(f"nics[{i}].network_id: no network {nic.network_id!r}")
            if network.datacenter_id != vm.datacenter_id:
                raise InvalidRecord(
                    f"nics[{i}].network_id: network {network.id} is in datacenter "
                    f"{network.datacenter_id}, not the VM's {vm.datacenter_id}"
                )
            try:
                taken = await self._take(
                    conn, network, nic.address, vm.id, vm.tenant_id, None, mac_prefix
                )
            except (InvalidRecord, Conflict) as exc:
                raise _renamed(exc, f"nics[{i}]") from None
            if network.tenant_id is None:
                await self._consume(conn, vm.tenant_id, {PUBLIC_IPS: 1})
            held.append(taken)
        await _outbox.insert(
            conn, _outbox.stamp([nic_event("nic.added", n, vm.tenant_id) for n in held])
        )
        return held

    async def _network(self, conn: Conn, network_id: str) -> Network:
        table = table_of(Network)
        row = await conn.fetchrow(table.get_sql, network_id)
        if row is None:
            raise InvalidRecord(f"network_id: no network {network_id!r}")
        return table.decode(row)

    async def _take(
        self,
        conn: Conn,
        network: Network,
        address: str | None,
        vm_id: str | None,
        tenant_id: str | None,
        mac: str | None,
        mac_prefix: str | None,
    ) -> IpAllocation:
        wanted = None if address is None else ipam.check_address(network, address)
        stamp = now()
        rested = stamp - timedelta(seconds=network.quarantine_s)
        # A sparse network is probed blind (a random address tried with no read of what is
        # held, one row per try); after _BLIND misses the held set is read and picked from,
        # which also tells a full network (AddressesExhausted).
        taken: set[str] | None = None
        for attempt in range(_ATTEMPTS):
            if wanted is not None:
                candidate = wanted
            else:
                if taken is None and attempt >= _BLIND:
                    taken = await self._taken(conn, network.id, rested)
                candidate = ipam.pick(network, () if taken is None else taken)
            nic_mac = ipam.new_mac(mac_prefix) if mac_prefix is not None else mac
            row = await self._insert(conn, network.id, candidate, vm_id, tenant_id, nic_mac, stamp)
            if row is not None:
                return _allocation(row)
            holder = await conn.fetchrow(
                "SELECT address, vm_id, tenant_id, released_at FROM ip_allocations "
                "WHERE network_id = $1 AND address = $2",
                network.id,
                candidate,
            )
            if holder is not None and _rested(holder["released_at"], rested):
                # released long enough ago: the row goes, the address is taken in its place
                await conn.execute(
                    "DELETE FROM ip_allocations WHERE network_id = $1 AND address = $2 "
                    "AND released_at IS NOT NULL AND released_at <= $3",
                    network.id,
                    candidate,
                    rested,
                )
                row = await self._insert(
                    conn, network.id, candidate, vm_id, tenant_id, nic_mac, stamp
                )
                if row is not None:
                    return _allocation(row)
                continue
            if holder is None:  # the address is free: the MAC was the clash
                if mac_prefix is None:
                    raise AlreadyExists(f"mac: {mac} is already held by another NIC")
                continue
            if wanted is not None:
                raise _taken_error(network, holder)
            if taken is not None:
                taken.add(candidate)
        raise VersionConflict(
            f"network {network.id}: {_ATTEMPTS} addresses were taken by concurrent callers "
            "first: try again"
        )

    @staticmethod
    async def _insert(
        conn: Conn,
        network_id: str,
        address: str,
        vm_id: str | None,
        tenant_id: str | None,
        mac: str | None,
        stamp: Any,
    ) -> Any:
        """The new allocation's row, or None if the address (or the MAC) is held."""
        return await conn.fetchrow(
            f"INSERT INTO ip_allocations ({_IP_COLS}) VALUES ($1, $2, $3, $4, $5, $6, NULL) "
            f"ON CONFLICT DO NOTHING RETURNING {_IP_COLS}",
            network_id,
            address,
            vm_id,
            tenant_id,
            mac,
            stamp,
        )

    async def attach_ip(
        self,
        network_id: str,
        address: str,
        vm_id: str | None,
        *,
        tenant_id: str,
        mac_prefix: str | None = None,
    ) -> IpAllocation:
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                f"SELECT {_IP_COLS} FROM ip_allocations WHERE network_id = $1 AND address = $2 "
                f"AND {_HELD} AND tenant_id = $3",
                network_id,
                address,
                tenant_id,
            )
            if row is None:
                raise NotFound(f"tenant {tenant_id} holds no address {address} in {network_id}")
            held = _allocation(row)
            if held.vm_id == vm_id:
                return held  # already so
            if vm_id is not None and held.vm_id is not None:
                raise Conflict(f"address: {address} is attached to VM {held.vm_id}")
            mac = None if vm_id is None else await self._free_mac(conn, mac_prefix)
            row = await conn.fetchrow(
                f"UPDATE ip_allocations SET vm_id = $3, mac = $4 WHERE network_id = $1 "
                f"AND address = $2 AND {_HELD} RETURNING {_IP_COLS}",
                network_id,
                address,
                vm_id,
                mac,
            )
            after = _allocation(row)
            change = after if vm_id is not None else held
            kind = "nic.added" if vm_id is not None else "nic.removed"
            await _outbox.insert(conn, _outbox.stamp([nic_event(kind, change, tenant_id)]))
        self._outbox_written()
        return after

    async def _free_mac(self, conn: Conn, prefix: str | None) -> str:
        """A MAC of ``prefix`` no held NIC has (the unique index is the last word)."""
        for _ in range(16):
            mac = ipam.new_mac(prefix or DEFAULT_MAC_PREFIX)
            row = await conn.fetchrow(
                f"SELECT mac FROM ip_allocations WHERE mac = $1 AND {_HELD}", mac
            )
            if row is None:
                return mac
        raise VersionConflict(f"no free MAC of prefix {prefix} found in 16 tries: try again")

    async def _taken(self, conn: Conn, network_id: str, rested: Any) -> set[str]:
        """The addresses of the network held or resting in quarantine."""
        rows = await conn.fetch(
            "SELECT address FROM ip_allocations WHERE network_id = $1 "
            f"AND ({_HELD} OR released_at > $2)",
            network_id,
            rested,
        )
        return {r["address"] for r in rows}

    async def release_ip(
        self, network_id: str, address: str, *, events: Sequence[OutboxEvent] = ()
    ) -> IpAllocation:
        stamped = _outbox.stamp(events)
        async with self._transaction() as conn:
            rows = await self._release_ips(
                conn, f"network_id = $2 AND address = $3 AND {_HELD}", network_id, address
            )
            if not rows:
                raise NotFound(f"address {address!r} of network {network_id!r} is not allocated")
            await _outbox.insert(conn, stamped)
        if stamped:
            self._outbox_written()
        return rows[0]

    async def release_vm_ips(
        self, vm_id: str, *, events: Sequence[OutboxEvent] = ()
    ) -> list[IpAllocation]:
        stamped = _outbox.stamp(events)
        async with self._transaction() as conn:
            rows = await self._release_held_by_vm(conn, vm_id)
            await _outbox.insert(conn, stamped)
        if stamped or rows:
            self._outbox_written()
        return rows

    async def _release_held_by_vm(self, conn: Conn, vm_id: str) -> list[IpAllocation]:
        """Release a VM's addresses in the caller's transaction (the VM's delete), each with
        its ``nic.removed`` event."""
        released = await self._release_ips(conn, f"vm_id = $2 AND {_HELD}", vm_id)
        events = [nic_event("nic.removed", n, n.tenant_id) for n in released if n.mac]
        await _outbox.insert(conn, _outbox.stamp(events))
        return released

    async def _release_ips(self, conn: Conn, where: str, *key: Any) -> list[IpAllocation]:
        """Put the addresses ``where`` selects in quarantine, and give the public ones back to
        their tenants' ``public_ips`` quota, in the caller's transaction."""
        rows = await conn.fetch(
            f"UPDATE ip_allocations SET released_at = $1 WHERE {where} RETURNING {_IP_COLS}",
            now(),
            *key,
        )
        released = sorted((_allocation(r) for r in rows), key=lambda a: (a.network_id, a.address))
        for held in released:
            if held.tenant_id is None:
                continue
            public = await conn.fetchrow(
                "SELECT id FROM networks WHERE id = $1 AND tenant_id IS NULL", held.network_id
            )
            if public is not None:
                await self._give_back(conn, held.tenant_id, {PUBLIC_IPS: 1})
        return released

    async def list_ips(
        self,
        network_id: str | None = None,
        *,
        vm_id: str | None = None,
        tenant_id: str | None = None,
        public: bool | None = None,
        released: bool = False,
    ) -> list[IpAllocation]:
        clauses = [] if released else [f"a.{_HELD}"]
        args: list[Any] = []
        for column, value in (
            ("network_id", network_id),
            ("vm_id", vm_id),
            ("tenant_id", tenant_id),
        ):
            if value is not None:
                args.append(value)
                clauses.append(f"a.{column} = ${len(args)}")
        if public is not None:
            clauses.append(f"n.tenant_id IS {'' if public else 'NOT '}NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        cols = ", ".join(f"a.{c.strip()}" for c in _IP_COLS.split(","))
        sql = (
            f"SELECT {cols} FROM ip_allocations a JOIN networks n ON n.id = a.network_id"
            f"{where} ORDER BY a.network_id, a.address"
        )
        async with self._reader() as conn:
            rows = await conn.fetch(sql, *args)
        return [_allocation(r) for r in rows]


def nic_event(kind: str, nic: IpAllocation, tenant_id: str | None) -> OutboxEvent:
    """A ``nic.added``/``nic.removed`` event: what the network's DHCP server must follow."""
    data = {"network_id": nic.network_id, "address": nic.address, "mac": nic.mac}
    return OutboxEvent(type=kind, subject=f"vm/{nic.vm_id}", tenant_id=tenant_id, data=data)


def _renamed(exc: CloudcoreError, prefix: str) -> CloudcoreError:
    """``exc`` again, its message naming the NIC's field: ``address: ...`` becomes
    ``nics[0].address: ...``; a message naming no field is about the NIC's network."""
    text = str(exc)
    field, sep, rest = text.partition(": ")
    if sep and field in ("address", "mac", "network_id"):
        return type(exc)(f"{prefix}.{field}: {rest}")
    return type(exc)(f"{prefix}.network_id: {text}")


def _rested(released_at: Any, rested: datetime) -> bool:
    """Whether an allocation released at ``released_at`` (None: held) has passed quarantine.
    SQLite gives the time back as text, PostgreSQL as a datetime."""
    if released_at is None:
        return False
    if isinstance(released_at, str):
        released_at = datetime.fromisoformat(released_at)
    if released_at.tzinfo is None:
        released_at = released_at.replace(tzinfo=UTC)
    return bool(released_at <= rested)


def _holder(row: Any) -> str:
    if row["vm_id"] is not None:
        return f"VM {row['vm_id']}"
    if row["tenant_id"] is not None:
        return f"tenant {row['tenant_id']}"
    return "a reservation"


def _taken_error(network: Network, row: Any) -> Conflict:
    address = row["address"]
    if row["released_at"] is None:
        return AlreadyExists(
            f"address: {address} of network {network.id} is held by {_holder(row)}"
        )
    return Conflict(
        f"address: {address} of network {network.id} was released at {row['released_at']} and "
        f"rests in quarantine for {network.quarantine_s} s"
    )
