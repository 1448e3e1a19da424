"""The error contract: one JSON body, the right status, never a stack trace."""

from __future__ import annotations

from pathlib import Path

from cloudcore.store import Store
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api


def assert_error_body(body: object, code: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code and error["message"] and error["request_id"]
    assert "Traceback" not in error["message"]


async def test_no_token_is_401_with_a_challenge(api: ApiClient) -> None:
    r = await api.call("GET", "/vms", None)
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error_body(r.body, "unauthorized")
    r = await api.call("GET", "/vms", "cc_not-a-real-token")
    assert r.status == 401 and "unknown" in r.body["error"]["message"]


async def test_a_body_that_is_not_json_is_400(api: ApiClient) -> None:
    r = await api.call("POST", "/vms", "alice", data=b"{not json")
    assert r.status == 400
    assert_error_body(r.body, "bad_request")


async def test_unknown_paths_and_methods_keep_the_error_body(api: ApiClient) -> None:
    r = await api.call("GET", "/no-such-thing", "alice")
    assert r.status == 404
    assert_error_body(r.body, "not_found")
    r = await api.call("PUT", "/vms", "alice", {})
    assert r.status == 405
    assert_error_body(r.body, "method_not_allowed")


async def test_an_unknown_vm_is_404(api: ApiClient) -> None:
    r = await api.call("GET", "/vms/0000", "alice")
    assert r.status == 404
    assert_error_body(r.body, "not_found")
    r = await api.call("POST", "/vms/0000/start", "alice")
    assert r.status == 404


async def test_a_bad_query_parameter_is_422_naming_it(api: ApiClient) -> None:
    for query, name in [("limit=0", "limit"), ("state=SLEEPY", "state"), ("colour=1", "colour")]:
        r = await api.call("GET", f"/vms?{query}", "alice")
        assert r.status == 422, r.body
        assert_error_body(r.body, "invalid_query")
        assert name in r.body["error"]["message"]
        assert r.body["error"]["details"]["field"] == name
        assert r.body["error"]["details"]["reason"]


async def test_a_body_with_trailing_characters_is_400_not_json(api: ApiClient) -> None:
    r = await api.call("POST", "/tenants", "admin", data=b'{"name": "x"}}')
    assert r.status == 400, r.body
    assert_error_body(r.body, "bad_request")
    assert "trailing characters" in r.body["error"]["message"]


async def test_an_invalid_body_names_the_field_and_the_reason_in_details(
    api: ApiClient,
) -> None:
    r = await api.call("POST", "/tenants", "admin", {"name": "x"})
    assert r.status == 422, r.body
    assert r.body["error"]["details"] == {"field": "id", "reason": "missing required field"}
    r = await api.call("POST", "/tenants", "admin", {"id": 7})
    assert r.body["error"]["details"] == {"field": "id", "reason": "Expected `str`, got `int`"}
    future = {"name": "t", "expires_at": "2000-01-01T00:00:00Z"}
    r = await api.call("POST", "/tokens", "alice", future)
    assert r.status == 422, r.body
    assert r.body["error"]["details"] == {
        "field": "expires_at",
        "reason": "the time is already past",
    }


async def test_the_request_id_is_echoed(api: ApiClient) -> None:
    r = await api.call("GET", "/vms/0000", "alice", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    assert r.body["error"]["request_id"] == "abc-123"


async def test_a_body_over_the_limit_is_413(sqlite_store: Store, tmp_path: Path) -> None:
    settings = api_settings(tmp_path, max_body_bytes=2048)
    async with serve_api(sqlite_store, settings) as api:
        big = {"name": "x" * 5000, "datacenter_id": "dc1", "cpus": 1, "memory_mib": 256}
        r = await api.call("POST", "/vms", "alice", big)
        assert r.status == 413
        assert_error_body(r.body, "body_too_large")


async def test_past_the_rate_limit_is_429_with_retry_after(
    sqlite_store: Store, tmp_path: Path
) -> None:
    settings = api_settings(tmp_path, rate_limit=0.5, rate_burst=3)
    async with serve_api(sqlite_store, settings) as api:
        statuses = [(await api.call("GET", "/vms", "alice")).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        r = await api.call("GET", "/vms", "alice")
        assert_error_body(r.body, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        assert (await api.call("GET", "/vms", "bob")).status == 200  # per token


async def test_a_store_that_is_down_is_503_with_retry_after(api: ApiClient) -> None:
    await api.store.close()
    r = await api.call("GET", "/vms", "admin")
    assert r.status == 503, r.body
    assert_error_body(r.body, "backend_unavailable")
    assert r.headers["Retry-After"] == "5"


async def test_the_document_marks_a_body_required_only_if_the_server_needs_one(
    api: ApiClient,
) -> None:
    paths = (await api.call("GET", "/openapi.json", None)).body["paths"]
    for action in ("stop", "reboot"):
        operation = paths[f"/api/v1/vms/{{vm_id}}/{action}"]["post"]
        assert operation["requestBody"]["required"] is False
    assert paths["/api/v1/vms"]["post"]["requestBody"]["required"] is True
    assert paths["/api/v1/tenants"]["post"]["requestBody"]["required"] is True
