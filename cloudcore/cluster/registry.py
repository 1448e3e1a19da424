"""Message types by wire tag: how a receiver knows what it is decoding.

Classes cannot travel, so an envelope names its message type by tag (the class name, for
:class:`~cloudcore.runtime.Message` subclasses) and the receiver must know a class with that tag.
The registry finds every imported ``Message`` subclass on its own; other frozen, tagged
``msgspec.Struct`` types are registered explicitly. An unknown tag is refused, and so is a tag
two imported classes share, unless one of them was registered explicitly (or give one an
explicit ``tag=`` in its class statement, as cloudcore's own cluster messages do).
"""

from __future__ import annotations

from typing import Any

import msgspec

from cloudcore.errors import InvalidMessage
from cloudcore.logging import get_logger
from cloudcore.runtime import Message, check_message

__all__ = ["MessageRegistry"]

_log = get_logger("cloudcore.cluster")


def _tag_of(cls: type) -> str:
    tag = cls.__struct_config__.tag  # type: ignore[attr-defined]
    return str(tag)


class MessageRegistry:
    """Tag -> message class. Thread-unsafe, like the rest of a node."""

    def __init__(self) -> None:
        self._by_tag: dict[str, type] = {}
        self._ambiguous: set[str] = set()
        self._explicit: set[type] = set()
        self._scan()

    def register(self, cls: type) -> type:
        """Make ``cls`` (a frozen, tagged msgspec.Struct) decodable; usable as a decorator."""
        if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
            raise InvalidMessage(f"{cls!r} is not a msgspec.Struct type")
        config = cls.__struct_config__
        if not config.frozen or config.tag is None:
            raise InvalidMessage(f"{cls.__qualname__} must be frozen and tagged to travel")
        self._explicit.add(cls)
        self._add(cls)
        return cls

    def resolve(self, tag: str) -> type | None:
        """The class for ``tag``, or None if none (or more than one) is known."""
        cls = self._by_tag.get(tag)
        if cls is None and tag not in self._ambiguous:
            self._scan()  # a module imported since the last look may define it
            cls = self._by_tag.get(tag)
        return cls

    @staticmethod
    def tag_of(message: Any) -> str:
        """The wire tag of ``message``'s type; InvalidMessage if it cannot travel."""
        check_message(message)
        return _tag_of(type(message))

    def _scan(self) -> None:
        pending: list[type] = [Message]
        while pending:
            cls = pending.pop()
            pending.extend(cls.__subclasses__())
            if cls is not Message:
                self._add(cls)

    def _add(self, cls: type) -> None:
        tag = _tag_of(cls)
        known = self._by_tag.get(tag)
        if cls in self._explicit:
            self._by_tag[tag] = cls  # an explicit registration settles a clash
            self._ambiguous.discard(tag)
        elif known is None:
            if tag not in self._ambiguous:
                self._by_tag[tag] = cls
        elif known is not cls and known not in self._explicit and _name(known) != _name(cls):
            # Two classes, one tag: decoding would guess. Refuse the tag and say so once.
            del self._by_tag[tag]
            self._ambiguous.add(tag)
            _log.error("cluster.ambiguous_tag", tag=tag, classes=[_name(known), _name(cls)])


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
