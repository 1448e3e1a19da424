"""The gateway's error mapping: only cloudcore errors mean something to a client; anything else
is a 500 carrying the request id, with the trace in the log and never in the body."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from actors.operations import StopTimeout
from cloudcore.app.gateway.api import Api, ApiRequest, aiohttp_handler
from cloudcore.app.gateway.context import REQUEST_ID
from cloudcore.app.gateway.errors import error_middleware
from cloudcore.app.gateway.schemas import StopBody
from cloudcore.errors import InvalidRequest, TransportUnavailable

_api = Api("test")


@_api.post("/bug", summary="a handler with a bug", public=True)
async def bug(req: ApiRequest[None, None]) -> Any:
    return int("x")  # a ValueError that is nobody's input


@_api.post("/refuse", summary="a handler refusing its input", public=True)
async def refuse(req: ApiRequest[None, None]) -> Any:
    raise InvalidRequest("count: must be 1 or more")


@_api.post("/congested", summary="a handler whose tell the transport refuses", public=True)
async def congested(req: ApiRequest[None, None]) -> Any:
    raise TransportUnavailable("9000 bytes wait for the broker (transport.max_unsent_bytes)")


@_api.post("/stop", body=StopBody, summary="a typed body", public=True)
async def stop(req: ApiRequest[StopBody, None]) -> Any:
    timeout: StopTimeout | None = req.body.timeout
    return {"timeout": timeout}


@web.middleware
async def _request_id(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request[REQUEST_ID] = request.headers.get("X-Request-Id", "")
    return await handler(request)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[_request_id, error_middleware])
    for route in _api.routes:
        app.router.add_route(route.method, route.path, aiohttp_handler(route))
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_an_unexpected_exception_is_a_500_with_the_request_id_and_no_trace(
    client: TestClient[web.Request, web.Application],
) -> None:
    with capture_logs() as logs:
        reply = await client.post("/bug", headers={"X-Request-Id": "req-42"})
        text = await reply.text()
    assert reply.status == 500
    error = (await reply.json())["error"]
    assert (error["code"], error["request_id"]) == ("internal_error", "req-42")
    assert "Traceback" not in text and "ValueError" not in text and "invalid literal" not in text
    logged = [entry for entry in logs if entry["event"] == "api.internal_error"]
    assert len(logged) == 1 and logged[0]["request_id"] == "req-42"
    assert logged[0]["log_level"] == "error" and logged[0].get("exc_info")  # the trace: logged


async def test_an_invalid_request_is_a_422_naming_the_field(
    client: TestClient[web.Request, web.Application],
) -> None:
    reply = await client.post("/refuse", headers={"X-Request-Id": "req-43"})
    assert reply.status == 422
    error = (await reply.json())["error"]
    assert error["code"] == "invalid_value"
    assert error["message"] == "count: must be 1 or more"
    assert error["request_id"] == "req-43"


async def test_what_msgspec_refuses_at_the_edge_stays_a_client_error(
    client: TestClient[web.Request, web.Application],
) -> None:
    not_json = await client.post("/stop", data=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status == 400
    assert (await not_json.json())["error"]["code"] == "bad_request"
    out_of_range = await client.post("/stop", json={"timeout": -1})
    assert out_of_range.status == 422
    error = (await out_of_range.json())["error"]
    assert error["code"] == "invalid_body" and "timeout" in error["message"]
    fine = await client.post("/stop", json={"timeout": 5})
    assert (fine.status, await fine.json()) == (200, {"timeout": 5.0})


async def test_transport_back_pressure_is_a_503_with_retry_after(
    client: TestClient[web.Request, web.Application],
) -> None:
    r = await client.post("/congested")
    assert r.status == 503
    assert int(r.headers["Retry-After"]) >= 1
    body = await r.json()
    assert body["error"]["code"] == "backend_unavailable"
    assert "transport.max_unsent_bytes" in body["error"]["message"]
