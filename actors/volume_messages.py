"""What the storage actors take: the parameters of each volume operation (one frozen, tagged
struct per operation, as :mod:`actors.operations` for VMs) and the messages of the pool and
Volume actors.

The gateway (``cloudcore.app``) imports the parameter structs; they import nothing of the app.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from actors.messages import RecoverVerb
from actors.volume_lifecycle import VolumeOperation
from cloudcore.runtime import Message
from cloudcore.store.records import Task

__all__ = [
    "Activate",
    "AttachParams",
    "CreateVolumeParams",
    "DeleteSnapshotParams",
    "DeleteVolumeParams",
    "DetachParams",
    "ExportAlso",
    "ExtendParams",
    "GetPool",
    "GetVolume",
    "ListBackend",
    "PoolStatus",
    "RecoverVolume",
    "Release",
    "RequestVolumeOperation",
    "Reserve",
    "SizeGib",
    "SnapshotVolumeParams",
    "UnexportFrom",
    "VolumeParams",
    "WatchVolumeTasks",
]

#: The largest volume: 64 TiB.
SizeGib = Annotated[int, msgspec.Meta(ge=1, le=65536)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class _Params(msgspec.Struct, frozen=True, kw_only=True, tag=True, forbid_unknown_fields=True):
    operation: ClassVar[VolumeOperation]


class CreateVolumeParams(_Params, frozen=True, kw_only=True):
    """Create the volume its record describes on its pool: empty, or holding the data of
    snapshot ``snapshot_id`` or (a clone) of volume ``source_volume_id`` now."""

    operation = VolumeOperation.CREATE
    snapshot_id: _Id | None = None
    source_volume_id: _Id | None = None


class AttachParams(_Params, frozen=True, kw_only=True):
    """Export the volume to the host of ``vm_id`` and have its hypervisor attach it; with
    ``delete_on_termination``, deleting the VM deletes the volume too (else it is detached and
    kept). The flag lives in the attach task's parameters."""

    operation = VolumeOperation.ATTACH
    vm_id: _Id
    delete_on_termination: bool = False


class DetachParams(_Params, frozen=True, kw_only=True):
    """The hypervisor lets go of the volume, then the pool stops exporting it."""

    operation = VolumeOperation.DETACH


class ExtendParams(_Params, frozen=True, kw_only=True):
    """Grow the volume to ``size_gib`` (its quota taken when asked, given back on failure)."""

    operation = VolumeOperation.EXTEND
    size_gib: SizeGib


class SnapshotVolumeParams(_Params, frozen=True, kw_only=True):
    """Take the snapshot whose record (CREATING) was written with the request."""

    operation = VolumeOperation.SNAPSHOT
    snapshot_id: _Id
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class DeleteSnapshotParams(_Params, frozen=True, kw_only=True):
    operation = VolumeOperation.DELETE_SNAPSHOT
    snapshot_id: _Id


class DeleteVolumeParams(_Params, frozen=True, kw_only=True):
    operation = VolumeOperation.DELETE


VolumeParams = (
    CreateVolumeParams
    | AttachParams
    | DetachParams
    | ExtendParams
    | SnapshotVolumeParams
    | DeleteSnapshotParams
    | DeleteVolumeParams
)


# -- the Volume actor --------------------------------------------------------------------------


class GetVolume(Message, frozen=True, kw_only=True):
    """Replies with the Volume record as the actor holds it."""


class RequestVolumeOperation(Message, frozen=True, kw_only=True):
    """Start an operation; replies with its task at once (IllegalTransition, naming the state
    and what is allowed, when the volume's state does not allow it). ``task``: the task written
    with the request (a create's), else the actor begins one."""

    params: VolumeParams
    task: Task | None = None


class RecoverVolume(Message, frozen=True, kw_only=True):
    """An operator's verdict on a volume in ERROR; replies with the volume (``delete`` with the
    delete's task)."""

    verb: RecoverVerb


# -- the pool actor ----------------------------------------------------------------------------


class PoolStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A pool as its actor sees it. ``limit_mib`` is its capacity x overcommit; ``committed_mib``
    what its volumes and snapshots (and creates in flight) are promised."""

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

    @property
    def room_mib(self) -> int:
        return self.limit_mib - self.committed_mib if self.connected else 0


class GetPool(Message, frozen=True, kw_only=True):
    """Replies with the pool's PoolStatus."""


class Reserve(Message, frozen=True, kw_only=True):
    """Promise ``size_mib`` more of the pool (a new volume, an extend, a snapshot); replies with
    the PoolStatus, or InsufficientCapacity (nothing promised) when it does not fit."""

    size_mib: int


class Release(Message, frozen=True, kw_only=True):
    """Take back a promise of ``size_mib`` (a volume or snapshot deleted, a create failed)."""

    size_mib: int


class Activate(Message, frozen=True, kw_only=True):
    """Replies with the ref of the actor of volume ``volume_id`` of this pool, started from its
    record if it is not running (a virtual actor)."""

    volume_id: str


class ListBackend(Message, frozen=True, kw_only=True):
    """Replies with what the backend holds: (volume ids with the initiator each is exported to,
    snapshot ids)."""


class ExportAlso(Message, frozen=True, kw_only=True):
    """To a pool, before the VM using volume ``volume_id`` migrates: its export admits host
    ``host_id``'s initiator too. Replies with the connection as that host opens it."""

    volume_id: str
    host_id: str


class UnexportFrom(Message, frozen=True, kw_only=True):
    """To a pool, as a migration ends: the export of ``volume_id`` stops admitting host
    ``host_id``'s initiator (the source's after a move, the target's after a failure)."""

    volume_id: str
    host_id: str


class WatchVolumeTasks(Message, frozen=True, kw_only=True):
    """To a pool: resume or end the tasks of its volumes RUNNING that nothing drives (also
    sent by a timer). Replies with the ids of the tasks it acted on."""
