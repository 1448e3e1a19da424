"""Datacenters: every role lists and reads them; an admin registers a new one, which this node
starts running at once."""

from __future__ import annotations

from typing import Annotated

import msgspec

from actors.balancer import BalancePlan, BalancePolicy
from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import require
from cloudcore.app.gateway.listing import sorted_page
from cloudcore.app.gateway.schemas import NamedQuery
from cloudcore.store.records import Datacenter, Page, Role

__all__ = ["BalancePolicyChange", "BalanceQuery", "DatacenterCreate", "api"]

api = Api("datacenters")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


class DatacenterCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new datacenter. ``id`` and ``name`` are unique."""

    id: _Id
    name: _Name
    location: Annotated[str, msgspec.Meta(max_length=200)] = ""


@api.get("/datacenters", query=NamedQuery, reply=Page[Datacenter], summary="List datacenters")
async def list_datacenters(req: ApiRequest[None, NamedQuery]) -> Page[Datacenter]:
    """The newest first unless ``sort`` says otherwise."""
    q = req.query
    where = {} if q.name is None else {"name": q.name}
    return await sorted_page(req.gateway.store, Datacenter, where, q)


@api.get("/datacenters/{dc_id}", reply=Datacenter, summary="Get a datacenter", errors=(404,))
async def get_datacenter(req: ApiRequest[None, None]) -> Datacenter:
    return await req.gateway.store.get(Datacenter, req.params["dc_id"])


@api.post(
    "/datacenters",
    body=DatacenterCreate,
    reply=Datacenter,
    status=201,
    summary="Register a datacenter (admin)",
    errors=(403, 409),
)
async def create_datacenter(req: ApiRequest[DatacenterCreate, None]) -> Reply:
    """Stores it (409 if the id or the name is taken), then runs its actors on this node; its
    hosts are registered with ``POST /hosts``."""
    require(req.principal, Role.ADMIN)
    body = req.body
    dc = await req.gateway.store.create(
        Datacenter(id=body.id, name=body.name, location=body.location)
    )
    await req.gateway.orchestrator.add_datacenter(dc)
    return Reply(dc, 201, {"Location": f"/api/v1/datacenters/{dc.id}"})


class BalanceQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``spread`` evens out memory load until the most and least loaded hosts differ by at
    most ``threshold`` (a share of memory); ``consolidate`` empties the least loaded hosts;
    ``off`` moves nothing. At most ``max_moves`` migrations."""

    policy: BalancePolicy = BalancePolicy.SPREAD
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    max_moves: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20


class BalanceRun(msgspec.Struct, frozen=True, kw_only=True):
    plan: BalancePlan
    task_ids: list[str]


@api.get(
    "/datacenters/{dc_id}/balance",
    query=BalanceQuery,
    reply=BalancePlan,
    summary="The balancing plan, without doing it (admin, operator)",
    errors=(403, 404),
)
async def balance_plan(req: ApiRequest[None, BalanceQuery]) -> BalancePlan:
    """Each move with its reason, the spread before and after, hosts left empty."""
    require(req.principal, Role.ADMIN, Role.OPERATOR)
    q = req.query
    return await req.gateway.orchestrator.balance_plan(
        req.params["dc_id"], q.policy, threshold=q.threshold, max_moves=q.max_moves
    )


@api.post(
    "/datacenters/{dc_id}/balance",
    body=BalanceQuery,
    reply=BalanceRun,
    status=202,
    summary="Balance a datacenter now: the plan's migrations as tasks (admin, operator)",
    errors=(403, 404),
)
async def balance(req: ApiRequest[BalanceQuery, None]) -> Reply:
    require(req.principal, Role.ADMIN, Role.OPERATOR)
    b = req.body
    made, tasks = await req.gateway.orchestrator.balance(
        req.params["dc_id"], b.policy, threshold=b.threshold, max_moves=b.max_moves
    )
    return Reply(BalanceRun(plan=made, task_ids=[t.id for t in tasks]), 202)


class BalancePolicyChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The policy the datacenter's balancer applies every ``orchestrator.balance_interval``:
    ``off``, ``spread`` (even out the hosts' memory load) or ``consolidate`` (pack VMs onto
    fewer hosts; empty hosts go to standby and are woken when a placement needs them)."""

    policy: BalancePolicy


@api.put(
    "/datacenters/{dc_id}/balance/policy",
    body=BalancePolicyChange,
    reply=Datacenter,
    summary="Set the datacenter's balancing policy (admin, operator)",
    errors=(403, 404),
)
async def set_balance_policy(req: ApiRequest[BalancePolicyChange, None]) -> Datacenter:
    """Stored on the datacenter (its ``balance_policy``); its balancer runs a round at once
    when the datacenter runs on this node, else at its next interval."""
    require(req.principal, Role.ADMIN, Role.OPERATOR)
    return await req.gateway.orchestrator.set_balance_policy(req.params["dc_id"], req.body.policy)
