"""The shared client's pure parts: the API's error body, Server-Sent Events, which API URL, and
how each face words a failure."""

from __future__ import annotations

import json

import pytest

from cloudcore.app.client import (
    DEFAULT_API,
    ApiFailure,
    ServerEvent,
    SseDecoder,
    api_url,
    failure_of_reply,
)
from cloudcore.app.commands._api import failure_line
from cloudcore.app.console._render import failure as console_line
from cloudcore.errors import CloudcoreError

_BODY = {
    "error": {
        "code": "illegal_transition",
        "message": "cannot pause a VM that is STOPPED",
        "details": {"state": "STOPPED"},
        "request_id": "req-42",
    }
}


def _decode(text: str) -> list[ServerEvent]:
    decoder = SseDecoder()
    return [e for line in text.splitlines(keepends=True) if (e := decoder.feed(line))]


# ---------------------------------------------------------------------- the API's error body


def test_an_error_body_gives_its_message_code_details_and_request_id() -> None:
    failure = failure_of_reply(409, json.dumps(_BODY).encode())
    assert isinstance(failure, CloudcoreError)
    assert str(failure) == "cannot pause a VM that is STOPPED"
    assert (failure.status, failure.code) == (409, "illegal_transition")
    assert failure.request_id == "req-42"
    assert failure.details == {"state": "STOPPED"}
    assert failure.connected and not failure.retryable


def test_an_error_body_without_details_or_request_id_still_decodes() -> None:
    body = {"error": {"code": "not_found", "message": "no VM vm-1"}}
    failure = failure_of_reply(404, json.dumps(body).encode())
    assert (str(failure), failure.code, failure.details, failure.request_id) == (
        "no VM vm-1",
        "not_found",
        {},
        None,
    )


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (b"<html>\nBad Gateway\n</html>", "HTTP 502: <html>"),
        (b"", "HTTP 502: no body"),
        (b'{"detail": "not ours"}', 'HTTP 502: {"detail": "not ours"}'),
        (b'{"error": "a string"}', 'HTTP 502: {"error": "a string"}'),
        (b"x" * 500, "HTTP 502: " + "x" * 200),
    ],
)
def test_a_body_that_is_not_the_apis_error_body_gives_its_first_line(raw: bytes, line: str) -> None:
    failure = failure_of_reply(502, raw)
    assert (str(failure), failure.status, failure.code) == (line, 502, None)


# ---------------------------------------------------------------------- each face's wording


def test_the_cli_words_an_error_reply_as_message_and_code() -> None:
    failure = failure_of_reply(409, json.dumps(_BODY).encode())
    assert failure_line(failure) == "cannot pause a VM that is STOPPED [illegal_transition]"


def test_the_console_words_an_error_reply_as_message_and_status() -> None:
    failure = failure_of_reply(409, json.dumps(_BODY).encode())
    assert console_line(failure) == "cannot pause a VM that is STOPPED (409)"


def test_a_refused_token_tells_the_cli_user_how_to_give_one() -> None:
    body = {"error": {"code": "unauthorized", "message": "the API token is unknown"}}
    failure = failure_of_reply(401, json.dumps(body).encode())
    assert failure_line(failure) == (
        "the API token is unknown (give a token with --token or CLOUDCORE_TOKEN) [unauthorized]"
    )


def test_an_api_not_reached_says_what_to_check_in_each_face() -> None:
    failure = ApiFailure("cannot reach the API at http://h:1/api/v1", connected=False)
    assert failure.retryable and failure.status is None
    assert failure_line(failure) == (
        "cannot reach the API at http://h:1/api/v1: is `cloudcore serve` running?"
    )
    assert console_line(failure) == (
        "cannot reach the API at http://h:1/api/v1 "
        "(is the node running? --api or CLOUDCORE_API_URL names another)"
    )


def test_a_body_that_is_not_the_apis_is_shown_as_is_by_both_faces() -> None:
    failure = failure_of_reply(502, b"Bad Gateway")
    assert failure_line(failure) == console_line(failure) == "HTTP 502: Bad Gateway"


# ---------------------------------------------------------------------- Server-Sent Events


def test_events_carry_their_type_id_and_data() -> None:
    events = _decode('id: 7\nevent: vm.state_changed\ndata: {"a": 1}\n\n')
    assert events == [ServerEvent("7", "vm.state_changed", '{"a": 1}')]
    assert events[0].json() == {"a": 1}


def test_multi_line_data_is_joined_with_newlines() -> None:
    (event,) = _decode("data: first\ndata:second\ndata:  third\n\n")
    assert event.data == "first\nsecond\n third"  # one leading space is the separator's
    assert event.event == "message"


def test_the_id_carries_over_to_later_events_and_the_type_does_not() -> None:
    events = _decode(
        "id: 1\nevent: a\ndata: x\n\nevent: b\ndata: y\n\ndata: z\n\nid: 2\ndata: w\n\n"
    )
    assert [(e.id, e.event, e.data) for e in events] == [
        ("1", "a", "x"),
        ("1", "b", "y"),
        ("1", "message", "z"),
        ("2", "message", "w"),
    ]


def test_comments_crlf_and_events_without_data_give_nothing_of_their_own() -> None:
    text = ": heartbeat\r\n\r\nevent: ping\r\n\r\nretry: 100\r\nid: 9\r\ndata: {}\r\n\r\n"
    assert _decode(text) == [ServerEvent("9", "message", "{}")]


def test_an_event_not_yet_ended_by_a_blank_line_is_not_given() -> None:
    assert _decode("id: 1\ndata: half\n") == []


def test_an_id_with_a_nul_is_ignored() -> None:
    (event,) = _decode("id: 3\n\nid: a\0b\ndata: x\n\n")
    assert event.id == "3"


def test_an_event_without_data_decodes_to_none() -> None:
    assert ServerEvent("", "message", "").json() is None


# ---------------------------------------------------------------------- which API


def test_the_given_url_comes_first() -> None:
    env = {"CLOUDCORE_API_URL": "http://env:1/api/v1"}
    assert api_url("http://given:2/api/v1", env) == "http://given:2/api/v1"


def test_the_environment_comes_next() -> None:
    env = {"CLOUDCORE_API_URL": "http://env:1/api/v1"}
    assert api_url(None, env) == api_url("", env) == "http://env:1/api/v1"


def test_the_default_comes_last_and_an_empty_variable_counts_as_unset() -> None:
    assert api_url(None, {}) == DEFAULT_API == "http://127.0.0.1:8080/api/v1"
    assert api_url(None, {"CLOUDCORE_API_URL": "  "}) == DEFAULT_API


def test_without_a_mapping_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDCORE_API_URL", "http://from-env:3/api/v1")
    assert api_url() == "http://from-env:3/api/v1"
    monkeypatch.delenv("CLOUDCORE_API_URL")
    assert api_url() == DEFAULT_API
