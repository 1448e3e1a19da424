"""The console's blocking client: the same calls, run to their end on a private loop; Ctrl-C
abandons a call and leaves the client usable."""

from __future__ import annotations

import pytest

from cloudcore.app.client import ApiFailure, BlockingClient
from tests.unit.client.conftest import TOKEN, Api


def test_get_and_post_answer_as_the_async_client_does(threaded_api: Api) -> None:
    with BlockingClient(threaded_api.url, TOKEN) as client:
        assert client.get("/echo", {"limit": 3, "cursor": None}) == {
            "ok": True,
            "query": {"limit": "3"},
        }
        assert client.post("/echo", {"path": "/user"})["ok"] is True
    assert threaded_api.seen.requests[1]["body"] == {"path": "/user"}
    assert threaded_api.seen.requests[1]["authorization"] == f"Bearer {TOKEN}"


def test_an_error_reply_raises_api_failure(threaded_api: Api) -> None:
    with BlockingClient(threaded_api.url, TOKEN) as client, pytest.raises(ApiFailure) as caught:
        client.get("/missing")
    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_a_stream_gives_its_events_one_by_one(threaded_api: Api) -> None:
    with BlockingClient(threaded_api.url, TOKEN) as client:
        with client.stream("/stream") as events:
            got = [(e.event, e.json()) for e in events]
        assert got == [("vm.state_changed", {"state": "RUNNING"}), ("task.step", {})]
        assert client.get("/echo")["ok"] is True  # the stream's connection was given back


def test_ctrl_c_abandons_the_call_in_hand_and_the_client_goes_on(threaded_api: Api) -> None:
    with BlockingClient(threaded_api.url, TOKEN) as client:
        with pytest.raises(KeyboardInterrupt):
            client.get("/interrupt")
        assert threaded_api.seen.dropped.wait(10), "the abandoned call kept its connection"
        assert client.get("/echo")["ok"] is True


def test_an_api_not_listening_raises_api_failure_not_connected(nowhere: str) -> None:
    with BlockingClient(nowhere, TOKEN) as client, pytest.raises(ApiFailure) as caught:
        client.get("/health")
    assert not caught.value.connected
    assert client.base_url == nowhere
