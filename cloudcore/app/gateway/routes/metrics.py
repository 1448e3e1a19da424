"""The node's Prometheus metrics (see :mod:`cloudcore.app.gateway.metrics` for what is measured)."""

from __future__ import annotations

import ipaddress

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from cloudcore.app.gateway.api import Api, ApiRequest
from cloudcore.app.gateway.errors import ApiError
from cloudcore.app.gateway.metrics import METRICS

__all__ = ["api", "on_loopback"]

api = Api("meta")


@api.get(
    "/metrics",
    reply=str,
    content_type="text/plain",
    public=True,
    errors=(403,),
    summary="Prometheus metrics (on the loopback interface only)",
)
async def metrics(req: ApiRequest[None, None]) -> web.Response:
    """Prometheus' text format, at ``/api/v1/metrics`` and at ``/metrics``.

    Public (no token: a Prometheus scraper has none), but only to connections that arrived on a
    loopback address of the node (``127.0.0.1``, ``::1``): the API may listen on every
    interface, and its metrics (actor paths, counts of VMs and hosts) are not for the outside.
    Any other connection gets 403. Scrape from the node itself, or through a local agent.
    """
    if not on_loopback(req.raw):
        raise ApiError(403, "forbidden", "the metrics are served on the loopback interface only")
    body = await req.raw.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def on_loopback(request: web.Request) -> bool:
    """Whether the request's connection came in on a loopback address of this node."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or not sockname:
        return False  # a Unix socket or a closed connection: not a loopback bind
    try:
        return ipaddress.ip_address(str(sockname[0]).split("%")[0]).is_loopback
    except ValueError:
        return False
