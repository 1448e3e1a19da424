"""Requests the OpenAPI document allows are not refused as invalid: the exact inputs an outside
schemathesis run found answered 422 (issue 11)."""

from __future__ import annotations

import asyncio

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode

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
    whole = (await api.call("GET", "/events?sort=position:asc")).body["items"]
    assert whole, "the demo's creation published events"
    ms, seq = whole[0]["position"].split("-")
    r = await api.call("GET", f"/events?after={int(ms)}-{int(seq)}&sort=position:asc")  # Redis's
    assert r.status == 200 and r.body["items"] == whole[1:]
    r = await api.call("GET", f"/events?before={int(ms)}-{int(seq) + 1}")
    assert r.status == 200 and r.body["items"] == whole[:1]
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


def _refused_valid(base: str, token: str, labels: set[str]) -> list[str]:
    """Positive cases schemathesis generates from the document for ``labels``, answered 400 or
    422 other than ``message_not_accepted`` (the one refusal the document cannot express)."""
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(base + "/openapi.json", timeout=10)
    origin = base.removesuffix("/api/v1")
    refused: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.label not in labels:
                continue

            @hypothesis.settings(
                max_examples=25,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=origin, session=session, headers=headers)
                code = response.json().get("error", {}).get("code") if response.content else None
                if response.status_code in (400, 422) and code != "message_not_accepted":
                    refused.append(
                        f"{case.operation.label}: {case.as_curl_command()} -> {response.text[:300]}"
                    )

            check()
    return refused


async def test_schema_valid_requests_are_not_refused_as_invalid(api: ApiClient) -> None:
    labels = {
        "GET /api/v1/datacenters",
        "GET /api/v1/templates",
        "GET /api/v1/tenants",
        "GET /api/v1/events",
        "POST /api/v1/system/ask",
        "POST /api/v1/system/tell",
    }
    refused = await asyncio.to_thread(_refused_valid, api.base, api.tokens["admin"], labels)
    assert not refused, "\n".join(refused[:10])


async def test_the_document_describes_the_messages_the_system_endpoints_decode(
    api: ApiClient,
) -> None:
    doc = (await api.call("GET", "/openapi.json", None)).body
    components = doc["components"]["schemas"]
    message = components["AskBody"]["properties"]["message"]
    names = {ref["$ref"].rpartition("/")[2] for ref in message["anyOf"]}
    assert {"GetHost", "GetVM", "PlaceVM"} <= names
    assert "Spawned" not in names and "Terminated" not in names  # need an actor reference
    assert all(components[name]["additionalProperties"] is False for name in names)
    assert components["TellBody"]["properties"]["message"] == message
    # The exact body found refused, {"message": {}}, is outside the document now: every
    # message names its type.
    assert all("type" in components[name]["required"] for name in names)
    r = await api.call("POST", "/system/ask", "admin", {"message": {}, "path": "/"})
    assert r.status == 422 and r.body["error"]["details"]["field"] == "message.type"
