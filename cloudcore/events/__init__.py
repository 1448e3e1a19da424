"""The event bus: :class:`EventBus`, :class:`Event` and :func:`open_event_bus`."""

from __future__ import annotations

from cloudcore.config import Settings
from cloudcore.events._wire import POSITION_PATTERN, normalize_position
from cloudcore.events.base import START, Event, EventBus, EventFilter
from cloudcore.events.dedup import SeenIds, deduplicated

__all__ = [
    "POSITION_PATTERN",
    "START",
    "Event",
    "EventBus",
    "EventFilter",
    "SeenIds",
    "deduplicated",
    "normalize_position",
    "open_event_bus",
]


async def open_event_bus(settings: Settings) -> EventBus:
    """The configured event bus: in-process (``local``) or Redis Streams (``redis``).

    Raises BackendUnavailable if Redis does not answer.
    """
    conf = settings.events
    if conf.backend == "redis":
        from cloudcore.events.redis import RedisEventBus

        return await RedisEventBus.connect(
            conf.redis_url, stream=conf.stream, retention=conf.retention
        )
    from cloudcore.events.local import LocalEventBus

    return LocalEventBus(retention=conf.retention)
