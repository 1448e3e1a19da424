"""The base type of actor messages and the check every ``tell`` makes.

Messages are frozen, tagged ``msgspec.Struct`` types: immutable (so a message shared by two actors
cannot change under one of them) and self-describing on the wire (the tag names the type, so a
union of messages decodes without guessing). Every message can carry a correlation id.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cloudcore.errors import InvalidMessage

__all__ = ["Message", "check_message"]


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, omit_defaults=True):
    """Base class of cloudcore messages. Subclasses are tagged with their class name.

    Commands are imperative (``CreateVM``), events past tense (``VMCreated``).
    """

    correlation_id: str | None = None


# Types already found valid: the check runs once per type, not once per message.
_valid_types: set[type] = set()


def check_message(message: Any) -> None:
    """Raise InvalidMessage (a TypeError) unless ``message`` is a frozen, tagged msgspec.Struct."""
    cls = type(message)
    if cls in _valid_types:
        return
    if not isinstance(message, msgspec.Struct):
        raise InvalidMessage(
            f"{cls.__module__}.{cls.__qualname__} is not a message: actor messages are frozen, "
            "tagged msgspec.Struct types (subclass cloudcore.runtime.Message)"
        )
    config = cls.__struct_config__
    if not config.frozen or config.tag is None:
        missing = " and ".join(
            word
            for word, ok in (("frozen", config.frozen), ("tagged", config.tag is not None))
            if not ok
        )
        raise InvalidMessage(
            f"{cls.__module__}.{cls.__qualname__} is a msgspec.Struct but not {missing}: "
            "declare it with frozen=True, tag=True (or subclass cloudcore.runtime.Message)"
        )
    _valid_types.add(cls)
