"""Operation parameters: decoded once at an edge, each limit refused naming its field."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.lifecycle import Operation
from actors.messages import RequestOperation
from actors.operations import (
    PARAMS,
    ReconfigureParams,
    SnapshotParams,
    StopParams,
    decode_params,
    default_params,
    task_data,
)
from cloudcore.errors import InvalidRequest


@pytest.mark.parametrize(
    ("operation", "values", "field"),
    [
        (Operation.STOP, {"timeout": -1}, "timeout"),
        (Operation.STOP, {"timeout": 3601}, "timeout"),
        (Operation.STOP, {"timeout": "soon"}, "timeout"),
        (Operation.REBOOT, {"hard": "yes"}, "hard"),
        (Operation.RECONFIGURE, {"cpus": 0}, "cpus"),
        (Operation.RECONFIGURE, {"cpus": 1025}, "cpus"),
        (Operation.RECONFIGURE, {"memory_mib": 15}, "memory_mib"),
        (Operation.RECONFIGURE, {"cpus": 1.5}, "cpus"),
        (Operation.RECONFIGURE, {}, "cpus and/or memory_mib"),
        (Operation.SNAPSHOT, {}, "name"),
        (Operation.SNAPSHOT, {"name": ""}, "name"),
        (Operation.SNAPSHOT, {"name": "x" * 101}, "name"),
        (Operation.SNAPSHOT, {"name": "a/b"}, "name"),
        (Operation.MIGRATE, {"host_id": ""}, "host_id"),
        (Operation.MIGRATE, {"host_id": "no spaces"}, "host_id"),
        (Operation.START, {"hard": True}, "hard"),
        (Operation.PAUSE, {"timeout": 1}, "timeout"),
        (Operation.DELETE, {"force": True}, "force"),
    ],
)
def test_each_operation_refuses_its_bad_values_naming_the_field(
    operation: Operation, values: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest, match=field) as caught:
        decode_params(operation, values)
    assert isinstance(caught.value, ValueError)  # callers catching ValueError still do


def test_good_values_decode_to_the_operations_own_type() -> None:
    assert decode_params(Operation.STOP, {"timeout": 0}) == StopParams(timeout=0.0)
    assert decode_params(Operation.RECONFIGURE, {"memory_mib": 512}) == ReconfigureParams(
        memory_mib=512
    )
    for operation, kind in PARAMS.items():
        assert kind.operation is operation
    assert set(PARAMS) == set(Operation) - {Operation.DEPLOY}


def test_an_operation_that_needs_parameters_has_no_defaults() -> None:
    assert default_params(Operation.STOP) == StopParams()
    with pytest.raises(InvalidRequest, match="cpus and/or memory_mib"):
        default_params(Operation.RECONFIGURE)
    with pytest.raises(InvalidRequest, match="name"):
        default_params(Operation.SNAPSHOT)
    with pytest.raises(InvalidRequest, match="deploy"):
        default_params(Operation.DEPLOY)


def test_a_request_crossing_a_node_is_checked_again_when_decoded() -> None:
    good = RequestOperation(operation=Operation.SNAPSHOT, params=SnapshotParams(name="before"))
    wire = msgspec.msgpack.encode(good)
    assert msgspec.msgpack.decode(wire, type=RequestOperation) == good
    bad = msgspec.msgpack.encode(
        RequestOperation(operation=Operation.SNAPSHOT, params=SnapshotParams(name=""))
    )
    with pytest.raises(msgspec.ValidationError, match=r"params\.name"):
        msgspec.msgpack.decode(bad, type=RequestOperation)


def test_the_task_records_the_parameters_given() -> None:
    assert task_data(StopParams()) == {}
    assert task_data(StopParams(timeout=5.0)) == {"timeout": 5.0}
    assert task_data(ReconfigureParams(cpus=2)) == {"cpus": 2}
    assert decode_params(Operation.RECONFIGURE, task_data(ReconfigureParams(cpus=2))) == (
        ReconfigureParams(cpus=2)
    )
