"""Messages as JSON for the system endpoints (``/system/tell``, ``/system/ask``): decoding
``{"type": "GetHost", ...}`` into the message, the check that the actor handles it, and the
document's schema of exactly what decodes.

A message JSON can carry is one whose every field has a JSON schema and that needs no actor
reference (a reply address is absent or null). The document lists them as a union tagged by
``type``, each with exactly its fields; the decoder takes the same set, so a message the document
allows decodes. What the document cannot say is which actor takes which type: that refusal is a
422 ``message_not_accepted`` naming the types the actor accepts.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from typing import Any

import msgspec

from cloudcore.app.gateway.errors import ApiError
from cloudcore.cluster.registry import MessageRegistry
from cloudcore.runtime import Actor, ActorRef, Message

__all__ = ["accepted_types", "check_accepted", "decode_message", "describe_messages"]

_registry = MessageRegistry()


def decode_message(raw: dict[str, Any]) -> Any:
    """The message ``raw`` describes (``{"type": "GetHost", ...fields}``); ApiError 422
    naming the unknown type (with close matches) or the field that does not fit."""
    tag = raw.get("type")
    if not isinstance(tag, str) or not tag:
        raise ApiError(
            422,
            "invalid_message",
            'message.type: name the message\'s type, as in {"type": "GetHost"}',
            {"field": "message.type"},
        )
    cls = _registry.resolve(tag)
    if cls is None or not _sendable(cls):
        close = difflib.get_close_matches(tag, _known_tags(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ApiError(
            422,
            "unknown_message_type",
            f"unknown message type {tag!r}{hint}",
            {"type": tag, "close_matches": close},
        )
    fields: tuple[str, ...] = cls.__struct_fields__  # type: ignore[attr-defined]
    tag_field: str = cls.__struct_config__.tag_field  # type: ignore[attr-defined]
    unknown = sorted(set(raw) - set(fields) - {tag_field})
    if unknown:
        raise ApiError(
            422,
            "invalid_message",
            f"{tag} has no field {unknown[0]!r} (its fields: {', '.join(fields) or 'none'})",
            {"field": f"message.{unknown[0]}"},
        )
    try:
        return msgspec.convert(_integral(raw), cls)
    except msgspec.ValidationError as exc:
        text = str(exc).replace("`$.", "`message.").replace("`$`", "`message`")
        raise ApiError(422, "invalid_message", f"{tag}: {text}") from None


def _integral(value: Any) -> Any:
    """``value`` with integral floats as ints: JSON Schema's ``integer`` takes ``2.0``, and so
    must the decoder (an int converts to a float field as well)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def accepted_types(actor: type) -> tuple[type, ...] | None:
    """The message classes ``actor`` receives, from its ``Actor[M]`` parameter (a class or a
    union of them); () if it takes none (``Actor[NoReturn]``: the guardians); None if it takes
    anything (``Actor[Any]``, or a type variable)."""
    for klass in actor.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Actor:
                (received,) = typing.get_args(base)
                if received is typing.NoReturn or received is typing.Never:
                    return ()
                members = typing.get_args(received) if _is_union(received) else (received,)
                if all(isinstance(m, type) and m is not Any for m in members):
                    return tuple(members)
                return None
    return None


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def check_accepted(actor: type, message: Any) -> None:
    """422 before delivery for a message the actor does not handle (it would fail the actor's
    ``assert_never`` and restart it), naming the types it accepts."""
    accepted = accepted_types(actor)
    if accepted is None or isinstance(message, accepted):
        return
    tags = sorted(str(m.__struct_config__.tag) for m in accepted if hasattr(m, "__struct_config__"))
    tag = type(message).__struct_config__.tag
    raise ApiError(
        422,
        "message_not_accepted",
        f"{actor.__name__} does not handle {tag}; it accepts {', '.join(tags) or 'none'}",
        {"field": "message.type", "reason": "not accepted by this actor", "accepted": tags},
    )


def _known_tags() -> list[str]:
    """The tags of the messages JSON can carry (see :func:`_sendable`)."""
    tags: list[str] = []
    pending: list[type] = list(Message.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        tag = str(cls.__struct_config__.tag)  # type: ignore[attr-defined]
        if _registry.resolve(tag) is cls and _sendable(cls):
            tags.append(tag)
    return tags


def _ref_as_null(kind: Any) -> dict[str, Any]:
    if _holds_ref(kind):
        return {"type": "null"}  # a reply address cannot come from JSON: absent or null
    raise NotImplementedError(kind)


@functools.cache
def _sendable(cls: type) -> bool:
    """Whether JSON can carry a ``cls``: every field has a JSON schema, and none it needs is
    an actor reference (Spawned, Terminated and the like travel only between actors). A type
    named with a leading ``_`` is an actor's own (its timers, its notes to itself): private,
    never sent from outside."""
    if cls.__name__.startswith("_"):
        return False
    try:
        msgspec.json.schema(cls, schema_hook=_ref_as_null)
    except (NotImplementedError, TypeError):
        return False
    fields = msgspec.structs.fields(cls)
    return not any(f.required and _holds_ref(f.type) for f in fields)


def _holds_ref(kind: Any) -> bool:
    if kind is ActorRef or typing.get_origin(kind) is ActorRef:
        return True
    return any(_holds_ref(arg) for arg in typing.get_args(kind))


def describe_messages(body: dict[str, Any], components: dict[str, Any]) -> None:
    """The body's ``message``: one of the messages :func:`decode_message` takes, by ``type``,
    with exactly their fields, so that what the document allows is what is decoded."""
    classes = [_registry.resolve(tag) for tag in sorted(set(_known_tags()))]
    union: Any = typing.Union[tuple(c for c in classes if c is not None)]  # noqa: UP007
    (schema,), found = msgspec.json.schema_components(
        [union], schema_hook=_ref_as_null, ref_template="#/components/schemas/{name}"
    )
    for ref in schema["anyOf"]:  # as decode_message: no field the message does not have
        found[ref["$ref"].rpartition("/")[2]]["additionalProperties"] = False
    for name, component in found.items():
        _base64_pattern(component)
        if components.setdefault(name, component) != component:
            raise RuntimeError(f"two schemas named {name} in the API document")
    schema["description"] = "The message, tagged by its type; ask the actor's accepted types"
    body["properties"]["message"] = schema


#: What the decoder takes for a ``bytes`` field: standard base64, padded.
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _base64_pattern(schema: Any) -> None:
    """Say in the document what a ``bytes`` field takes: ``contentEncoding`` alone constrains
    nothing a validator or a client generating requests checks, a pattern does."""
    if isinstance(schema, dict):
        if schema.get("contentEncoding") == "base64":
            schema.setdefault("pattern", _BASE64)
        for value in schema.values():
            _base64_pattern(value)
    elif isinstance(schema, list):
        for item in schema:
            _base64_pattern(item)
