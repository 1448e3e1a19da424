"""The aiohttp application: middlewares, every route module under ``/api/v1``, and serving it."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cloudcore.app.gateway.api import Route, aiohttp_handler
from cloudcore.app.gateway.context import GATEWAY, REQUEST_ID, Gateway
from cloudcore.app.gateway.errors import error_middleware
from cloudcore.app.gateway.openapi import build_openapi
from cloudcore.app.gateway.routes import all_apis
from cloudcore.config import ApiSettings
from cloudcore.errors import ConfigError
from cloudcore.logging import get_logger

__all__ = ["PREFIX", "ROUTES", "create_app", "listen", "start_api"]

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
    app.on_startup.append(_recover_conversions)
    app.on_cleanup.append(_stop_conversions)
    app.on_cleanup.append(_close_counters)
    routes: list[Route] = []
    for api in all_apis():
        for route in api.routes:
            app.router.add_route(route.method, PREFIX + route.path, aiohttp_handler(route))
            routes.append(route)
    # Prometheus scrapes /metrics by default: serve the same route at the root too.
    app.router.add_route("GET", "/metrics", aiohttp_handler(metrics_api.routes[0]))
    app[ROUTES] = routes
    app[OPENAPI] = build_openapi(routes, PREFIX)
    if gateway.settings.ui.enabled:
        from cloudcore.app.web import add_web  # the web console, on the same routes' handlers

        add_web(app)
    return app


async def _recover_conversions(app: web.Application) -> None:
    """The imports this node left RUNNING when it stopped: failed (conversions are started
    again by their datacenter's converter)."""
    gateway = app[GATEWAY]
    if gateway.importer is not None:
        await gateway.importer.recover()


async def _stop_conversions(app: web.Application) -> None:
    gateway = app[GATEWAY]
    if gateway.importer is not None:
        await gateway.importer.close()


async def _close_counters(app: web.Application) -> None:
    counters = app[GATEWAY].counters
    if counters is not None:
        await counters.close()


def listen(api: ApiSettings) -> socket.socket:
    """A socket bound to ``api.host``:``api.port`` and listening. Bound before anything else
    starts, so a taken port stops the node at once. Raises ConfigError naming ``api.port``.

    With ``api.workers`` > 1 the socket has SO_REUSEPORT: each worker process binds the same
    port and the kernel spreads new connections among them (Linux; ConfigError naming
    ``api.workers`` where the option does not exist)."""
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    if api.workers > 1 and reuse_port is None:
        raise ConfigError("api.workers > 1 needs SO_REUSEPORT, which this platform lacks")
    try:
        infos = socket.getaddrinfo(
            api.host, api.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"api.host: cannot listen on {api.host!r} ({exc})") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if api.workers > 1 and reuse_port is not None:
            sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"api.port: cannot listen on {_hostport(address)}: {exc.strerror or exc} "
            "(free the port or choose another with CLOUDCORE_API__PORT)"
        ) from exc
    return sock


async def start_api(gateway: Gateway, sock: socket.socket | None = None) -> web.AppRunner:
    """Serve the API on ``sock`` (from :func:`listen`, closed with the runner) or else on
    ``api.host``:``api.port``; stop it with ``await runner.cleanup()``. Raises ConfigError
    naming ``api.port`` if the address cannot be bound, with nothing left running."""
    api = gateway.settings.api
    sock = sock if sock is not None else listen(api)
    runner = web.AppRunner(
        create_app(gateway),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2.0,
        # aiohttp closes a connection with no complete request pending after this long, from
        # its opening on: an idle client, or one sending its headers slowly, is let go.
        keepalive_timeout=api.idle_timeout,
    )
    try:
        await runner.setup()  # starts the app's background tasks: a failure must end them
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
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
