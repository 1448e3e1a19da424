"""Prometheus metrics of the gateway: request latency by route (more collectors in
``cloudcore.gateway.routes.metrics``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram

__all__ = ["METRICS", "Metrics", "metrics_middleware"]


class Metrics:
    """The metrics of one gateway application, in a registry of its own (so two gateways in
    one process, as in tests, do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "cloudcore_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        metrics = request.app.get(METRICS)
        if metrics is not None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics.request_seconds.labels(route, request.method, str(status)).observe(
                time.perf_counter() - started
            )
