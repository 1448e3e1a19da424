"""The async client against a stand-in API: JSON calls, error replies, an API not reached,
listings across pages and Server-Sent Events."""

from __future__ import annotations

import pytest

from cloudcore.app.client import ApiFailure, Client, ServerEvent
from tests.unit.client.conftest import TOKEN, Api


async def test_a_call_sends_the_token_the_body_and_the_query_and_decodes_the_reply(
    api: Api,
) -> None:
    async with Client(api.url + "/", TOKEN) as client:
        reply = await client.call(
            "POST", "/echo", body={"a": 1}, params={"limit": 5, "after": None, "s": "x"}
        )
    assert reply == {"ok": True, "query": {"limit": "5", "s": "x"}}  # None is left out
    (seen,) = api.seen.requests
    assert seen["authorization"] == f"Bearer {TOKEN}"
    assert seen["body"] == {"a": 1}


async def test_without_a_token_no_authorization_is_sent(api: Api) -> None:
    async with Client(api.url, None) as client:
        await client.call("GET", "/echo")
    assert api.seen.requests[0]["authorization"] is None


async def test_an_empty_reply_is_none(api: Api) -> None:
    async with Client(api.url, TOKEN) as client:
        assert await client.call("GET", "/empty") is None


async def test_an_error_reply_is_an_api_failure_with_the_bodys_fields(api: Api) -> None:
    async with Client(api.url, TOKEN) as client:
        with pytest.raises(ApiFailure) as caught:
            await client.call("GET", "/missing")
    failure = caught.value
    assert (str(failure), failure.status, failure.code) == ("no VM vm-9", 404, "not_found")
    assert (failure.details, failure.request_id) == ({"vm_id": "vm-9"}, "req-1")


async def test_an_api_not_listening_is_not_connected_and_names_the_url_not_the_token(
    nowhere: str,
) -> None:
    async with Client(nowhere, TOKEN) as client:
        with pytest.raises(ApiFailure) as caught:
            await client.call("GET", "/echo")
    failure = caught.value
    assert str(failure) == f"cannot reach the API at {nowhere}"
    assert not failure.connected and failure.retryable and failure.status is None
    assert TOKEN not in str(failure) and TOKEN not in repr(failure) and TOKEN not in repr(client)


async def test_a_listing_joins_every_page_when_asked(api: Api) -> None:
    async with Client(api.url, TOKEN) as client:
        first = await client.listing("/pages", {}, all_pages=False, cursor="after")
        every = await client.listing("/pages", {"limit": "2"}, all_pages=True, cursor="after")
    assert first == {"items": [1, 2], "next_cursor": "c2"}
    assert every == {"items": [1, 2, 3, 4], "next_cursor": None}
    assert [r["query"] for r in api.seen.requests[1:]] == [
        {"limit": "2"},
        {"limit": "2", "after": "c2"},
        {"limit": "2", "after": "c3"},
    ]


async def test_a_stream_gives_its_events_and_sends_the_last_event_id(api: Api) -> None:
    async with (
        Client(api.url, TOKEN) as client,
        client.stream("/stream", {"subject": "vm/1"}, last_event_id="41") as events,
    ):
        got = [event async for event in events]
    assert got == [
        ServerEvent("1", "vm.state_changed", '{"state":\n"RUNNING"}'),
        ServerEvent("1", "task.step", "{}"),
    ]
    assert got[0].json() == {"state": "RUNNING"}
    (seen,) = api.seen.requests
    assert (seen["last_event_id"], seen["query"]) == ("41", {"subject": "vm/1"})


async def test_a_stream_refused_raises_when_it_opens(api: Api) -> None:
    async with Client(api.url, TOKEN) as client:
        with pytest.raises(ApiFailure) as caught:
            async with client.stream("/stream-missing"):
                raise AssertionError("the stream opened")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
