"""The types of request bodies, query parameters and replies that are not store records.

Records (:mod:`cloudcore.store.records`) are returned as they are: a VM reply is the VM record.
Constraints (``Meta``) here are what the gateway validates, and what the OpenAPI document shows.
The bodies of the VM actions take their constrained types from :mod:`actors.operations`, whose
parameter structs carry the same limits across the actor boundary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from actors.operations import Cpus, HostId, MemoryMib, SnapshotName, StopTimeout
from cloudcore.store.records import CURSOR_PATTERN, TaskState, TaskStep, VMState

__all__ = [
    "Cursor",
    "HABody",
    "Limit",
    "ListQuery",
    "MigrateBody",
    "NamedQuery",
    "NicCreate",
    "RebootBody",
    "ReconfigureBody",
    "SnapshotBody",
    "StopBody",
    "TaskQuery",
    "TaskView",
    "TombstoneQuery",
    "VMCreate",
    "VMQuery",
    "sort_of",
]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Cursor = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=CURSOR_PATTERN,
        description="The next_cursor of the previous page (any string of this pattern is read "
        "as a position in id order)",
    ),
]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class _Query(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ListQuery(_Query, frozen=True, kw_only=True):
    """Cursor pagination: ``cursor`` is the ``next_cursor`` of the previous page."""

    limit: Limit = 100
    cursor: Cursor | None = None


def sort_of(*fields: str) -> Any:
    """The type of a listing's ``sort``: ``FIELD[:asc|desc]``, FIELD one of ``fields``."""
    return Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=64,
            pattern=rf"^({'|'.join(fields)})(:(asc|desc))?$",
            description=f"FIELD[:asc|desc], FIELD one of {', '.join(fields)}; then by id. "
            "Default created_at:desc, the newest first",
        ),
    ]


VMSort = sort_of(
    "created_at", "updated_at", "id", "name", "state", "power", "tenant_id", "datacenter_id"
)
TaskSort = sort_of("created_at", "updated_at", "id", "kind", "subject", "state")
NameSort = sort_of("created_at", "updated_at", "id", "name")


class NamedQuery(ListQuery, frozen=True, kw_only=True):
    """A listing of things with names: ``name`` finds those of exactly this name; ``sort``
    (by name or time) and every page says in ``total`` how many match."""

    name: Name | None = None
    sort: NameSort | None = None  # type: ignore[valid-type]


class NicCreate(_Body, frozen=True, kw_only=True):
    """A NIC of a new VM: on ``network_id`` (the tenant's private network or a public one, in
    the VM's datacenter), with ``address`` if given, else a free one."""

    network_id: Id
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


HAPriority = Annotated[int, msgspec.Meta(ge=0, le=1000)]


class BootVolumeBody(_Body, frozen=True, kw_only=True):
    """The volume a new VM boots from instead of a template: an AVAILABLE volume of the VM's
    tenant and datacenter (404 if the tenant has no such volume, 422 naming the datacenter
    if it is in another, 409 naming its state if it is not AVAILABLE). The deploy attaches
    it to the VM as its first boot device; ``delete_on_termination``: deleting the VM
    deletes the volume too (else it is detached and kept)."""

    volume_id: Id
    delete_on_termination: bool = False


class VMCreate(_Body, frozen=True, kw_only=True):
    """A new VM. ``tenant_id`` (admins and operators only) creates it for another tenant.
    ``nics``: its NICs, whose addresses and MACs are held in the same transaction as the VM
    (422 naming ``nics[i].network_id`` or ``nics[i].address``, 409 for a taken address)."""

    name: Name
    datacenter_id: Id
    cpus: Cpus
    memory_mib: MemoryMib
    disk_gib: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 0
    template_id: Id | None = None
    network_ids: list[Id] = msgspec.field(default_factory=list)
    nics: Annotated[list[NicCreate], msgspec.Meta(max_length=16)] = msgspec.field(
        default_factory=list
    )
    start: bool = True
    tenant_id: Id | None = None
    #: The most a running VM may be reconfigured to (default: its size); at least the size.
    max_cpus: Cpus | None = None
    max_memory_mib: MemoryMib | None = None
    #: Restart it on another host if its host fails (HA), higher ``ha_priority`` first.
    ha: bool = False
    ha_priority: HAPriority = 0
    #: Boot from this volume (not with ``template_id``).
    boot_volume: BootVolumeBody | None = None


class HABody(_Body, frozen=True, kw_only=True):
    """Whether the VM is restarted elsewhere when its host fails, and before which others
    (higher ``priority`` first)."""

    ha: bool
    priority: HAPriority = 0


class VMQuery(ListQuery, frozen=True, kw_only=True):
    """``deleted``: include deleted VMs (their tombstones), which are left out otherwise
    unless ``state`` is DELETED; ``name``: exactly this name. Every page says in ``total``
    how many match."""

    name: Name | None = None
    sort: VMSort | None = None  # type: ignore[valid-type]

    tenant_id: Id | None = None
    datacenter_id: Id | None = None
    host_id: Id | None = None
    state: VMState | None = None
    deleted: bool = False


class TombstoneQuery(_Query, frozen=True, kw_only=True):
    """``deleted``: an admin's or operator's read of a deleted VM's tombstone (404 without)."""

    deleted: bool = False


class StopBody(_Body, frozen=True, kw_only=True):
    """Graceful stop; after ``timeout`` seconds (default: the node's stop_timeout) the VM is
    powered off hard. ``hard``: power off at once."""

    hard: bool = False
    timeout: StopTimeout | None = None


class RebootBody(_Body, frozen=True, kw_only=True):
    hard: bool = False


class ReconfigureBody(_Body, frozen=True, kw_only=True):
    """New size; give one or both."""

    cpus: Cpus | None = None
    memory_mib: MemoryMib | None = None


class SnapshotBody(_Body, frozen=True, kw_only=True):
    name: SnapshotName


class MigrateBody(_Body, frozen=True, kw_only=True):
    """Move the VM to ``host_id`` (None: the scheduler picks one); abort it if it takes longer
    than ``deadline`` seconds (None: the node's ``orchestrator.migration_deadline``)."""

    host_id: HostId | None = None
    deadline: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None


class TaskQuery(ListQuery, frozen=True, kw_only=True):
    sort: TaskSort | None = None  # type: ignore[valid-type]
    state: TaskState | None = None
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    tenant_id: Id | None = None


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    """A task with its journaled steps and how far it has come (0 to 1)."""

    id: str
    kind: str
    subject: str
    state: TaskState
    tenant_id: str | None
    error: str | None
    data: dict[str, Any]
    progress: float
    steps: list[TaskStep]
    created_at: datetime
    updated_at: datetime
