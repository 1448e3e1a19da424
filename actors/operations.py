"""The parameters of each operation on a placed VM: one frozen, tagged struct per operation.

They cross the actor boundary in :class:`actors.messages.RequestOperation` in place of a
``dict[str, Any]``, so the VM actor matches on their type instead of reading keys. Their limits
are ``msgspec.Meta`` constraints, checked wherever they are decoded: by the gateway, whose request
bodies use the same constrained types (a bad value is a 422 naming the field), by
:func:`decode_params` for a mapping a Python caller holds, and by the cluster transport when the
message crosses a node. A struct built in code is trusted, as every msgspec struct is.

The gateway (``cloudcore.app``) imports this module; it imports nothing of the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import msgspec

from actors.lifecycle import Operation
from cloudcore.errors import InvalidRequest

__all__ = [
    "PARAMS",
    "Cpus",
    "DeleteParams",
    "DeleteSnapshotParams",
    "HostId",
    "MemoryMib",
    "MigrateParams",
    "OperationParams",
    "PauseParams",
    "RebootParams",
    "ReconfigureParams",
    "ResumeParams",
    "RevertSnapshotParams",
    "SnapshotName",
    "SnapshotParams",
    "StartParams",
    "StopParams",
    "StopTimeout",
    "SuspendParams",
    "decode_params",
    "default_params",
    "params_of",
    "task_data",
]

Cpus = Annotated[int, msgspec.Meta(ge=1, le=1024)]
MemoryMib = Annotated[int, msgspec.Meta(ge=16, le=16 * 1024 * 1024)]
StopTimeout = Annotated[float, msgspec.Meta(ge=0, le=3600)]
SnapshotName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
]
HostId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class _Params(msgspec.Struct, frozen=True, kw_only=True, tag=True, forbid_unknown_fields=True):
    operation: ClassVar[Operation]


class StartParams(_Params, frozen=True, kw_only=True):
    operation = Operation.START


class StopParams(_Params, frozen=True, kw_only=True):
    """Graceful stop, powered off hard after ``timeout`` seconds (None: the node's
    stop_timeout; 0: at once)."""

    operation = Operation.STOP
    timeout: StopTimeout | None = None


class RebootParams(_Params, frozen=True, kw_only=True):
    operation = Operation.REBOOT
    hard: bool = False


class PauseParams(_Params, frozen=True, kw_only=True):
    operation = Operation.PAUSE


class ResumeParams(_Params, frozen=True, kw_only=True):
    """Resume a paused VM (in memory) or a suspended one (from disk)."""

    operation = Operation.RESUME


class SuspendParams(_Params, frozen=True, kw_only=True):
    operation = Operation.SUSPEND


class ReconfigureParams(_Params, frozen=True, kw_only=True):
    """A new size: one or both of ``cpus`` and ``memory_mib`` (None: unchanged)."""

    operation = Operation.RECONFIGURE
    cpus: Cpus | None = None
    memory_mib: MemoryMib | None = None

    def __post_init__(self) -> None:
        if self.cpus is None and self.memory_mib is None:
            raise InvalidRequest("a reconfigure needs cpus and/or memory_mib")


class SnapshotParams(_Params, frozen=True, kw_only=True):
    operation = Operation.SNAPSHOT
    name: SnapshotName


class RevertSnapshotParams(_Params, frozen=True, kw_only=True):
    """Return the VM to its snapshot ``name``; the monitor then reads the power it has."""

    operation = Operation.REVERT_SNAPSHOT
    name: SnapshotName


class DeleteSnapshotParams(_Params, frozen=True, kw_only=True):
    operation = Operation.DELETE_SNAPSHOT
    name: SnapshotName


class MigrateParams(_Params, frozen=True, kw_only=True):
    """Move the VM to ``host_id`` (None: the scheduler picks one), aborted if it takes longer
    than ``deadline`` seconds (None: ``orchestrator.migration_deadline``)."""

    operation = Operation.MIGRATE
    host_id: HostId | None = None
    deadline: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None


class DeleteParams(_Params, frozen=True, kw_only=True):
    operation = Operation.DELETE


OperationParams = (
    StartParams
    | StopParams
    | RebootParams
    | PauseParams
    | ResumeParams
    | SuspendParams
    | ReconfigureParams
    | SnapshotParams
    | RevertSnapshotParams
    | DeleteSnapshotParams
    | MigrateParams
    | DeleteParams
)

#: The parameter type of each operation on a placed VM (a deploy goes through its datacenter).
PARAMS: dict[Operation, type[OperationParams]] = {
    kind.operation: kind
    for kind in (
        StartParams,
        StopParams,
        RebootParams,
        PauseParams,
        ResumeParams,
        SuspendParams,
        ReconfigureParams,
        SnapshotParams,
        RevertSnapshotParams,
        DeleteSnapshotParams,
        MigrateParams,
        DeleteParams,
    )
}


def _kind(operation: Operation) -> type[OperationParams]:
    kind = PARAMS.get(operation)
    if kind is None:
        raise InvalidRequest(f"{operation} is not an operation of a placed VM")
    return kind


def decode_params(operation: Operation, values: Mapping[str, Any]) -> OperationParams:
    """``values`` as the parameters of ``operation``, checked against their limits.

    Raises InvalidRequest naming the field that is missing, unknown or out of range.
    """
    try:
        return msgspec.convert(dict(values), _kind(operation))
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{operation} parameters: {exc}") from None


def default_params(operation: Operation) -> OperationParams:
    """The parameters of ``operation`` when the caller gives none. InvalidRequest if it needs
    some (a reconfigure needs a size, a snapshot a name)."""
    return decode_params(operation, {})


def task_data(params: OperationParams) -> dict[str, Any]:
    """The parameters as the task records them: the fields given, without the tag."""
    fields = msgspec.structs.asdict(params)
    return {name: value for name, value in fields.items() if value is not None}


def params_of(operation: Operation, data: dict[str, Any]) -> dict[str, Any]:
    """A task's data without what the operation recorded beside its parameters (a migration
    records its plan: source, target, live, hold)."""
    if operation is Operation.MIGRATE:
        return {k: v for k, v in data.items() if k in ("host_id", "deadline")}
    return data
