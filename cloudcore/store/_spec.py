"""Parts of the store interface (:class:`cloudcore.store.base.Store` is all of them): networks
and their addresses, leases, and grants. The rules in :mod:`cloudcore.store.base` hold here too.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from cloudcore.store.records import IpAllocation, Lease, Network, OutboxEvent

__all__ = ["LeaseStore", "NetworkStore"]


class NetworkStore(ABC):
    """Networks and the addresses held in them (IPAM), each change one transaction."""

    # -- networks and addresses (IPAM) ---------------------------------------------------

    @abstractmethod
    async def create_network(
        self, network: Network, *, events: Sequence[OutboxEvent] = ()
    ) -> Network:
        """Store a new network after :func:`cloudcore.ipam.check_network` and, in the same
        transaction, checks against the networks of its datacenter.

        Raises InvalidRecord naming the field (``cidr`` malformed or overlapping another
        network of the datacenter, ``gateway`` outside it, ``ranges[i]`` that do not fit or
        overlap, ``vlan`` out of range, ``datacenter_id``/``tenant_id`` that do not exist),
        AlreadyExists (a network of that name and owner in the datacenter).
        """

    @abstractmethod
    async def delete_network(self, network_id: str, *, events: Sequence[OutboxEvent] = ()) -> None:
        """Delete a network no address of which is held (those in quarantine go with it).
        Raises Conflict naming a holder, NotFound."""

    @abstractmethod
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
        """Hold an address of a network, in one transaction with ``events``: ``address`` if
        given, else a free one picked at random from the network's ranges (never the gateway,
        an excluded address, a held one or one in quarantine). The NIC's MAC is ``mac``, or
        made from ``mac_prefix``; a held MAC is never given twice. Each of ``events`` is
        written with the ``address`` and ``mac`` given added to its data.

        An address of a public network held for a tenant counts against its ``public_ips``
        quota (consumed in the same transaction). Under any concurrency an address is held
        once. Raises InvalidRecord (no such network; ``address`` outside the ranges or
        reserved; another tenant's private network), AlreadyExists (the address is held,
        naming the holder; or ``mac`` is), Conflict (the address rests in quarantine),
        AddressesExhausted, QuotaExceeded. Nothing is stored when it raises.
        """

    @abstractmethod
    async def release_ip(
        self, network_id: str, address: str, *, events: Sequence[OutboxEvent] = ()
    ) -> IpAllocation:
        """Give an address back: it rests in quarantine for its network's ``quarantine_s``.
        Returns the released allocation. Raises NotFound if it is not held."""

    @abstractmethod
    async def attach_ip(
        self,
        network_id: str,
        address: str,
        vm_id: str | None,
        *,
        tenant_id: str,
        mac_prefix: str | None = None,
    ) -> IpAllocation:
        """Attach an address ``tenant_id`` holds (a public one it took) to VM ``vm_id`` as a NIC
        with a new MAC made from ``mac_prefix`` (``nic.added`` event), or detach it (``vm_id``
        None: the NIC goes, ``nic.removed``, the address stays the tenant's, still counted
        against ``public_ips``). The same attachment again is a no-op. Raises NotFound if the
        tenant holds no such address, Conflict if it is attached to another VM."""

    @abstractmethod
    async def release_vm_ips(
        self, vm_id: str, *, events: Sequence[OutboxEvent] = ()
    ) -> builtins.list[IpAllocation]:
        """Give back every address a VM holds (none: nothing), in one transaction."""

    @abstractmethod
    async def list_ips(
        self,
        network_id: str | None = None,
        *,
        vm_id: str | None = None,
        tenant_id: str | None = None,
        public: bool | None = None,
        released: bool = False,
    ) -> builtins.list[IpAllocation]:
        """The addresses held (with ``released``: also those given back, in quarantine or
        past it), of a network, a VM, a tenant, in public (or private) networks, ordered by
        network and address text."""


class LeaseStore(ABC):
    """Leases (one holder at a time, fenced by a growing token) and grants (short-lived secrets
    kept by their digest)."""

    # -- leases -----------------------------------------------------------------------------

    @abstractmethod
    async def acquire_lease(
        self,
        name: str,
        node: str,
        holder: str,
        ttl: float,
        *,
        at: datetime | None = None,
        reclaim: str | None = None,
    ) -> Lease | None:
        """Take the lease ``name`` for ``holder`` (a process of ``node``) for ``ttl`` seconds
        from ``at`` (default now) if nobody holds it or its lease expired by ``at``: the lease
        (its token one more than the last holder's), else None. Never two unexpired holders.

        ``reclaim``: a holder prefix of processes of the same ``node`` that the caller knows
        have ended (a restart after a crash, see :mod:`actors.ownership`): a lease held by
        ``node`` under a holder starting with it is taken at once, expired or not."""

    @abstractmethod
    async def renew_lease(
        self, lease: Lease, ttl: float, *, at: datetime | None = None
    ) -> Lease | None:
        """Extend ``lease`` to ``at + ttl`` if it is still the holder's and unexpired at ``at``;
        the renewed lease, else None (lost: it expired, and may have changed hands)."""

    @abstractmethod
    async def release_lease(self, lease: Lease, *, at: datetime | None = None) -> None:
        """End ``lease`` now (it expires at ``at``) if the holder still has it; else a no-op.
        The next holder gets a larger token."""

    @abstractmethod
    async def list_leases(self, prefix: str = "") -> builtins.list[Lease]:
        """The leases whose name starts with ``prefix``, expired ones included, by name."""

    # -- grants -----------------------------------------------------------------------------

    @abstractmethod
    async def put_grant(self, digest: str, kind: str, payload: str, expires_at: datetime) -> None:
        """Keep a grant of ``kind`` (``console``, ``session``) under ``digest``, the SHA-256
        (64 hex digits) of its secret, with ``payload`` (text the caller encodes), until
        ``expires_at``. The secret itself is never stored. Expired grants are removed here.
        InvalidRecord for a malformed digest; Conflict if the digest is taken."""

    @abstractmethod
    async def get_grant(self, digest: str, kind: str, *, at: datetime | None = None) -> str | None:
        """The payload of the grant, if it is unexpired at ``at`` (default now); else None."""

    @abstractmethod
    async def take_grant(self, digest: str, kind: str, *, at: datetime | None = None) -> str | None:
        """Remove the grant and return its payload if it was unexpired at ``at``; else None.
        Atomic: of concurrent takes of one grant, from any node, exactly one gets it."""

    @abstractmethod
    async def drop_grant(self, digest: str, kind: str) -> None:
        """Remove the grant (a session logged out). A no-op when there is none."""
