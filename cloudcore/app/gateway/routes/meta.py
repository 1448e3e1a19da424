"""About the API itself: its OpenAPI document, and whether the node is up."""

from __future__ import annotations

from typing import Any

import msgspec

from cloudcore import __version__
from cloudcore.app.gateway.api import Api, ApiRequest

__all__ = ["api"]

api = Api("meta")


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    version: str
    node: str


@api.get(
    "/openapi.json", reply=dict[str, Any], summary="This API's OpenAPI 3.1 document", public=True
)
async def openapi(req: ApiRequest[None, None]) -> dict[str, Any]:
    from cloudcore.app.gateway.app import OPENAPI

    return req.raw.app[OPENAPI]


@api.get("/health", reply=Health, summary="Whether this node serves", public=True)
async def health(req: ApiRequest[None, None]) -> Health:
    return Health(status="ok", version=__version__, node=req.gateway.settings.node.id)
