"""The actor system, for admins and operators: nodes, the actor tree, one actor, tell and ask
any message, restart or stop an actor, the recent dead letters. What the console drives.

Messages travel as JSON tagged with their type, as on the cluster wire::

    {"path": "/user/dc/dc1/dc1-h1", "message": {"type": "GetHost"}}

The type resolves through :class:`~cloudcore.cluster.registry.MessageRegistry` (every imported
``Message`` subclass); an unknown type is a 422 naming it with the close matches, a field that
does not fit is a 422 naming the field. Only actors under ``/user`` may be restarted or stopped:
the guardians and the runtime's own actors under ``/system`` are refused (403).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from cloudcore.app.gateway.api import Api, ApiRequest, Reply
from cloudcore.app.gateway.auth import require
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.messages import check_accepted, decode_message, describe_messages
from cloudcore.errors import CloudcoreError, describe
from cloudcore.runtime import ActorSystem
from cloudcore.runtime.introspection import ActorInfo
from cloudcore.store.records import Role

__all__ = ["api"]

api = Api("system")

ActorPath = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=r"^/")]
Timeout = Annotated[float, msgspec.Meta(gt=0, le=300)]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class InspectQuery(_Body, frozen=True, kw_only=True):
    path: ActorPath
    #: Another node of the cluster, asked through it (default: the node answering).
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class TreeQuery(_Body, frozen=True, kw_only=True):
    path: ActorPath = "/user"
    #: Another node of the cluster, asked through it (default: the node answering).
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class DeadLetterQuery(_Body, frozen=True, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class TellBody(_Body, frozen=True, kw_only=True):
    """``message``: the message as JSON, its ``type`` the message's type (``GetHost``)."""

    path: ActorPath
    message: dict[str, Any]


class AskBody(TellBody, frozen=True, kw_only=True):
    """``timeout``: seconds to wait for the reply (default: the runtime's ask_timeout)."""

    timeout: Timeout | None = None


class PathBody(_Body, frozen=True, kw_only=True):
    path: ActorPath


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    """``this``: the node answering. ``last_heartbeat`` is None for it on the local transport."""

    id: str
    this: bool
    status: str
    transport: str
    capabilities: dict[str, str]
    kinds: list[str] = msgspec.field(default_factory=list)
    last_heartbeat: datetime | None = None
    started_at: datetime | None = None
    #: What the node says of itself: ``profile``, ``datacenters`` (those it runs now,
    #: comma-separated), ``cpu_percent`` (since its last heartbeat), ``tasks`` (driven now).
    info: dict[str, str] = msgspec.field(default_factory=dict)


class NodeList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[NodeView]


class ActorView(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    node: str
    class_name: str
    status: str
    mailbox_depth: int
    processed: int
    restarts: int
    last_failure: str | None
    children: list[str]


class Told(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    message_type: str


class ActorStatus(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    status: str


class AskReply(msgspec.Struct, frozen=True, kw_only=True):
    """``reply``: what the actor answered, as JSON; ``reply_type`` its Python type."""

    path: str
    reply_type: str
    reply: Any


class DeadLetterView(msgspec.Struct, frozen=True, kw_only=True):
    recipient: str
    message_type: str
    reason: str
    time: datetime


class DeadLetterList(msgspec.Struct, frozen=True, kw_only=True):
    """``total``: dead letters since the node started; ``items``: the latest, oldest first."""

    total: int
    items: list[DeadLetterView]


def _operator(req: ApiRequest[Any, Any]) -> ActorSystem:
    require(req.principal, Role.ADMIN, Role.OPERATOR)
    return req.gateway.system


# ------------------------------------------------------------------ nodes


@api.get("/system/nodes", reply=NodeList, summary="The nodes of the cluster", errors=(403,))
async def list_nodes(req: ApiRequest[None, None]) -> NodeList:
    """This node first; with the amqp transport, then every other node it has heard of."""
    system = _operator(req)
    settings = req.gateway.settings
    kind = settings.transport.kind
    me = NodeView(
        id=system.node_id,
        this=True,
        status="up",
        transport=kind,
        capabilities=dict(settings.node.capabilities),
        info={
            "profile": settings.node.profile,
            "datacenters": ",".join(req.gateway.orchestrator.running()),
        },
    )
    items = [me]
    for member in req.gateway.members():
        view = NodeView(
            id=member.node,
            this=member.node == system.node_id,
            status=member.status,
            transport=kind,
            capabilities=dict(member.capabilities),
            kinds=list(member.kinds),
            last_heartbeat=datetime.fromtimestamp(member.last_heartbeat, UTC),
            started_at=datetime.fromtimestamp(member.started_at, UTC)
            if member.started_at
            else None,
            info=dict(member.info) or (me.info if member.node == system.node_id else {}),
        )
        if view.this:
            items[0] = msgspec.structs.replace(view, status=me.status)
        else:
            items.append(view)
    return NodeList(items=items)


# ------------------------------------------------------------------ the tree and one actor


@api.get(
    "/system/tree",
    query=TreeQuery,
    reply=ActorInfo,
    summary="The actor tree under a path",
    errors=(403, 404),
)
async def actor_tree(req: ApiRequest[None, TreeQuery]) -> ActorInfo:
    """Every actor under ``path`` (default ``/user``): class, status, mailbox depth, messages
    processed, restarts, last failure, children; of ``node`` if given (another node of the
    cluster, asked through it: 404 if this node is on its own)."""
    system = _operator(req)
    node = req.query.node
    if node is None or node == system.node_id:
        return system.tree(req.query.path)
    trees = req.gateway.trees
    if trees is None:
        raise ApiError(404, "not_found", f"node {node!r}: this node belongs to no cluster")
    return await trees(node, req.query.path)


@api.get(
    "/system/actors",
    query=InspectQuery,
    reply=ActorView,
    summary="Inspect one actor",
    errors=(403, 404),
)
async def inspect_actor(req: ApiRequest[None, InspectQuery]) -> ActorView:
    """One actor; of ``node`` if given (another node of the cluster, asked through it: 404 if
    this node is on its own)."""
    system = _operator(req)
    node = req.query.node
    if node is None or node == system.node_id:
        return _actor_view(system, req.query.path)
    trees = req.gateway.trees
    if trees is None:
        raise ApiError(404, "not_found", f"node {node!r}: this node belongs to no cluster")
    return _view_of(await trees(node, req.query.path), node)


def _actor_view(system: ActorSystem, path: str) -> ActorView:
    return _view_of(system.tree(path), system.node_id)


def _view_of(info: ActorInfo, node: str) -> ActorView:
    return ActorView(
        path=info.path,
        node=node,
        class_name=info.class_name,
        status=info.status,
        mailbox_depth=info.mailbox_depth,
        processed=info.processed,
        restarts=info.restarts,
        last_failure=info.last_failure,
        children=[child.name for child in info.children],
    )


# ------------------------------------------------------------------ messages


@api.post(
    "/system/tell",
    body=TellBody,
    reply=Told,
    status=202,
    summary="Send a message to an actor",
    errors=(403, 404, 422, 503),
    refine=describe_messages,
)
async def tell(req: ApiRequest[TellBody, None]) -> Told:
    """Fire and forget: 202 once the message is in the actor's mailbox."""
    system = _operator(req)
    ref = system.lookup(req.body.path)
    message = decode_message(req.body.message)
    check_accepted(system.actor_class(ref.path), message)
    ref.tell(message)
    return Told(path=ref.path, message_type=type(message).__name__)


@api.post(
    "/system/ask",
    body=AskBody,
    reply=AskReply,
    summary="Send a message to an actor and wait for its reply",
    errors=(403, 404, 409, 422, 500, 503),
    refine=describe_messages,
)
async def ask(req: ApiRequest[AskBody, None]) -> AskReply:
    """The actor's error, if it raises one, is the reply's error (mapped as any other; an
    error that is not cloudcore's is a 500 ``actor_failed`` describing it)."""
    system = _operator(req)
    ref = system.lookup(req.body.path)
    message = decode_message(req.body.message)
    check_accepted(system.actor_class(ref.path), message)
    try:
        value = await ref.ask(message, req.body.timeout)
    except CloudcoreError:
        raise
    except Exception as exc:
        raise ApiError(500, "actor_failed", f"{ref.path} raised {describe(exc)}") from exc
    return AskReply(
        path=ref.path,
        reply_type=type(value).__name__,
        reply=msgspec.to_builtins(value, enc_hook=str),
    )


# ------------------------------------------------------------------ restart and stop


@api.post(
    "/system/restart",
    body=PathBody,
    reply=ActorView,
    summary="Restart an actor (a fresh instance; its children restart with it)",
    errors=(403, 404, 409, 503),
)
async def restart(req: ApiRequest[PathBody, None]) -> ActorView:
    """As its supervisor would: the message in hand is interrupted (its asker gets
    ActorInterrupted), the children stop, a fresh instance starts and keeps the mailbox.
    Answers once it runs again. 409 if it is stopping or already restarting."""
    system = _operator(req)
    path = _user_path(req.body.path)
    await system.restart(path)
    return _actor_view(system, path)


@api.post(
    "/system/stop",
    body=PathBody,
    reply=ActorStatus,
    summary="Stop an actor (its children first)",
    errors=(403, 404, 503),
)
async def stop(req: ApiRequest[PathBody, None]) -> Reply:
    """Stops after the message in hand; what is still queued goes to dead letters. Answers
    200 once it has stopped, 202 if it is still stopping after the runtime's ask_timeout."""
    system = _operator(req)
    ref = system.lookup(_user_path(req.body.path))
    ref.stop()
    try:
        await asyncio.wait_for(ref.stopped(), system.ask_timeout)
    except TimeoutError:
        return Reply(ActorStatus(path=ref.path, status="stopping"), 202)
    return Reply(ActorStatus(path=ref.path, status="stopped"), 200)


def _user_path(path: str) -> str:
    path = path.rstrip("/")
    if not path.startswith("/user/"):
        raise ApiError(
            403,
            "forbidden",
            f"only actors under /user can be restarted or stopped, not {path or '/'}",
            {"path": path or "/"},
        )
    return path


# ------------------------------------------------------------------ dead letters


@api.get(
    "/system/deadletters",
    query=DeadLetterQuery,
    reply=DeadLetterList,
    summary="Recent dead letters",
    errors=(403,),
)
async def dead_letters(req: ApiRequest[None, DeadLetterQuery]) -> DeadLetterList:
    """Messages that reached no actor (stopped, full mailbox, expired ask), oldest first."""
    letters = _operator(req).dead_letters
    recent = letters.recent()[-req.query.limit :]
    return DeadLetterList(
        total=letters.count,
        items=[
            DeadLetterView(
                recipient=letter.recipient,
                message_type=letter.message_type,
                reason=letter.reason,
                time=datetime.fromtimestamp(letter.at, UTC),
            )
            for letter in recent
        ],
    )
