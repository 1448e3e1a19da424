"""Request bodies and queries of the volume and storage-pool endpoints. Sizes take their
limits from :mod:`actors.volume_messages`, whose parameter structs carry the same limits across
the actor boundary."""

from __future__ import annotations

from typing import Annotated

import msgspec

from actors.messages import RecoverVerb
from actors.volume_messages import SizeGib
from cloudcore.app.gateway.schemas import Id, Name, NamedQuery
from cloudcore.store.records import VolumeState

__all__ = [
    "AttachBody",
    "ExtendBody",
    "PoolView",
    "RecoverBody",
    "SnapshotCreate",
    "VolumeCreate",
    "VolumeQuery",
]

Tier = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class VolumeCreate(_Body, frozen=True, kw_only=True):
    """A new volume of ``size_gib`` on a pool of ``tier`` in the datacenter: empty, or with the
    data of snapshot ``snapshot_id`` or of volume ``source_volume_id`` (a clone; at most one of
    the two), on its source's pool, ``size_gib`` then defaulting to the source's size.
    ``tenant_id`` (admins and operators only) creates it for another tenant."""

    name: Name
    datacenter_id: Id
    size_gib: SizeGib | None = None
    tier: Tier = "standard"
    tenant_id: Id | None = None
    snapshot_id: Id | None = None
    source_volume_id: Id | None = None


class VolumeQuery(NamedQuery, frozen=True, kw_only=True):
    tenant_id: Id | None = None
    datacenter_id: Id | None = None
    vm_id: Id | None = None
    state: VolumeState | None = None


class ExtendBody(_Body, frozen=True, kw_only=True):
    """The new size, larger than the current one."""

    size_gib: SizeGib


class AttachBody(_Body, frozen=True, kw_only=True):
    """The VM to attach the volume to: the volume's tenant's, in its datacenter, placed, and
    RUNNING (hot), STOPPED or PAUSED. ``delete_on_termination``: deleting the VM deletes the
    volume too (default: the VM's delete detaches it and it stays AVAILABLE)."""

    vm_id: Id
    delete_on_termination: bool = False


class SnapshotCreate(_Body, frozen=True, kw_only=True):
    name: Name


class RecoverBody(_Body, frozen=True, kw_only=True):
    verb: RecoverVerb


class PoolView(msgspec.Struct, frozen=True, kw_only=True):
    """A storage pool: its capacity (MiB), what thin overcommit lets it promise
    (``limit_mib``), and what its volumes and snapshots are promised."""

    id: str
    datacenter_id: str
    driver: str
    tier: str
    connected: bool
    total_mib: int
    used_mib: int
    limit_mib: int
    committed_mib: int
    overcommit: float
