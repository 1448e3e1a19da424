"""What the gateway's handlers reach: the orchestrator, the store, the event bus, settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from cloudcore.config import Settings
from cloudcore.events import EventBus
from cloudcore.gateway.auth import RateLimiter, TokenCache
from cloudcore.runtime import ActorSystem
from cloudcore.store import Store

if TYPE_CHECKING:
    from actors.orchestrator import Orchestrator

__all__ = ["GATEWAY", "Gateway"]


@dataclass(slots=True)
class Gateway:
    """The node's services as the HTTP API sees them. One per application."""

    settings: Settings
    store: Store
    events: EventBus
    system: ActorSystem
    orchestrator: Orchestrator
    tokens: TokenCache
    limiter: RateLimiter


GATEWAY = web.AppKey("gateway", Gateway)
