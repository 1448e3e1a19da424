"""The aiohttp application: middlewares, every route module under ``/api/v1``, and serving it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cloudcore.app.gateway.api import Route, aiohttp_handler
from cloudcore.app.gateway.context import GATEWAY, REQUEST_ID, Gateway
from cloudcore.app.gateway.errors import error_middleware
from cloudcore.app.gateway.openapi import build_openapi
from cloudcore.app.gateway.routes import all_apis
from cloudcore.logging import get_logger

__all__ = ["PREFIX", "ROUTES", "create_app", "start_api"]

PREFIX = "/api/v1"
ROUTES = web.AppKey("routes", list[Route])
OPENAPI = web.AppKey("openapi", dict[str, Any])

_log = get_logger("cloudcore.app.gateway")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@web.middleware
async def _request_id(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Take the caller's X-Request-Id if it is sane, else make one; echo it in the reply."""
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


def create_app(gateway: Gateway) -> web.Application:
    """The gateway application (not yet serving: see :func:`start_api`)."""
    from cloudcore.app.gateway.metrics import (
        METRICS,
        Metrics,
        count_finished_tasks,
        metrics_middleware,
    )
    from cloudcore.app.gateway.routes.metrics import api as metrics_api

    app = web.Application(
        client_max_size=gateway.settings.api.max_body_bytes,
        middlewares=[_request_id, metrics_middleware, error_middleware],
    )
    app[GATEWAY] = gateway
    app[METRICS] = Metrics(gateway)
    app.cleanup_ctx.append(count_finished_tasks)
    routes: list[Route] = []
    for api in all_apis():
        for route in api.routes:
            app.router.add_route(route.method, PREFIX + route.path, aiohttp_handler(route))
            routes.append(route)
    # Prometheus scrapes /metrics by default: serve the same route at the root too.
    app.router.add_route("GET", "/metrics", aiohttp_handler(metrics_api.routes[0]))
    app[ROUTES] = routes
    app[OPENAPI] = build_openapi(routes, PREFIX)
    return app


async def start_api(gateway: Gateway) -> web.AppRunner:
    """Serve the API on ``api.host``:``api.port``; stop it with ``await runner.cleanup()``."""
    api = gateway.settings.api
    runner = web.AppRunner(
        create_app(gateway), access_log=None, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    site = web.TCPSite(runner, api.host, api.port)
    await site.start()
    for address in runner.addresses:
        _log.info("api.listening", url=f"http://{_hostport(address)}{PREFIX}")
    return runner


def _hostport(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def bound_port(runner: web.AppRunner) -> int:
    """The port the API listens on (useful with ``api.port = 0``)."""
    address = runner.addresses[0]
    port: int = address[1]
    return port
