"""Requests the OpenAPI document allows are not refused as invalid: the exact inputs an outside
schemathesis run found answered 422 (issue 11)."""

from __future__ import annotations

import pytest

from tests.component.gateway.conftest import ApiClient


@pytest.mark.parametrize("path", ["/datacenters", "/templates", "/tenants"])
async def test_cursor_0_is_a_position_not_a_422(api: ApiClient, path: str) -> None:
    r = await api.call("GET", f"{path}?cursor=0")
    assert r.status == 200, r.body
    assert isinstance(r.body["items"], list)


async def test_a_users_template_listing_takes_any_cursor_of_the_pattern(api: ApiClient) -> None:
    for cursor in ("0", "AAAA", "zzzz-_"):
        r = await api.call("GET", f"/templates?cursor={cursor}", "alice")
        assert r.status == 200, (cursor, r.body)


async def test_events_after_39_zeros_is_the_start(api: ApiClient) -> None:
    whole = await api.call("GET", "/events")
    r = await api.call("GET", "/events?after=" + "0" * 39)
    assert r.status == 200, r.body
    assert r.body["items"] == whole.body["items"]


async def test_events_after_a_redis_stream_id_and_past_the_end(api: ApiClient) -> None:
    whole = (await api.call("GET", "/events")).body["items"]
    assert whole, "the demo's creation published events"
    ms, seq = whole[0]["position"].split("-")
    r = await api.call("GET", f"/events?after={int(ms)}-{int(seq)}")  # Redis's spelling
    assert r.status == 200 and r.body["items"] == whole[1:]
    r = await api.call("GET", "/events?after=" + "9" * 40)
    assert r.status == 200 and r.body["items"] == []


async def test_the_document_says_the_cursor_and_position_patterns(api: ApiClient) -> None:
    doc = (await api.call("GET", "/openapi.json", None)).body
    for path, name, pattern in (
        ("/api/v1/tenants", "cursor", "^[A-Za-z0-9_-]+$"),
        ("/api/v1/events", "after", "^[0-9]+(-[0-9]+)?$"),
    ):
        (param,) = (p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name)
        patterns = [s.get("pattern") for s in param["schema"].get("anyOf", [param["schema"]])]
        assert pattern in patterns, param
