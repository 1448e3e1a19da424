"""The console's HTTP client: blocking, on the stdlib, one request per command.

A console runs one command at a time and waits for it, so a synchronous client is the simple
fit. Every failure becomes :class:`ApiFailure` carrying a message for a person: the API's own
message for an error reply, what to check when the node cannot be reached.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ApiClient", "ApiFailure", "ServerEvent"]

#: Seconds a request may take, over the time an ``ask`` itself may wait.
_REQUEST_TIMEOUT = 30.0


class ApiFailure(Exception):
    """A request failed; ``str()`` is the message to show. ``status`` 0: no HTTP reply."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One Server-Sent Event: ``data`` decoded from JSON when it is JSON."""

    event: str
    id: str
    data: Any


class ApiClient:
    """Calls ``base`` (``http://host:port/api/v1``) with a bearer token."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self._token = token

    def get(
        self, path: str, query: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        return self._call("GET", self._url(path, query), None, timeout)

    def post(self, path: str, body: Any, *, timeout: float | None = None) -> Any:
        return self._call("POST", self._url(path, None), body, timeout)

    @contextlib.contextmanager
    def stream(
        self, path: str, query: Mapping[str, Any] | None = None
    ) -> Iterator[Iterator[ServerEvent]]:
        """Connect to a Server-Sent Events endpoint (an error reply raises here), then give
        its events as they come; leaving the ``with`` closes the connection."""
        request = self._request("GET", self._url(path, query), None)
        request.add_header("Accept", "text/event-stream")
        with self._open(request, None) as response:
            yield _events(response)

    # ------------------------------------------------------------------ plumbing

    def _url(self, path: str, query: Mapping[str, Any] | None) -> str:
        url = self.base + path
        if query:
            pairs = {k: str(v) for k, v in query.items() if v is not None}
            url += "?" + urllib.parse.urlencode(pairs)
        return url

    def _request(self, method: str, url: str, body: Any) -> urllib.request.Request:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        return request

    def _call(self, method: str, url: str, body: Any, timeout: float | None) -> Any:
        request = self._request(method, url, body)
        with self._open(request, _REQUEST_TIMEOUT + (timeout or 0.0)) as response:
            raw = response.read()
        return _json(raw.decode("utf-8", errors="replace")) if raw else None

    def _open(self, request: urllib.request.Request, timeout: float | None) -> Any:
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise _failure(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ApiFailure(
                f"cannot reach the API at {self.base}: {exc.reason} "
                "(is the node running? --api or CLOUDCORE_API_URL names another)"
            ) from None
        except (TimeoutError, ConnectionError) as exc:
            raise ApiFailure(f"the API at {self.base} did not answer: {exc}") from None


def _events(response: Iterable[bytes]) -> Iterator[ServerEvent]:
    fields: dict[str, str] = {}
    for raw in response:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line:
            if not line.startswith(":"):  # a comment: the keep-alive
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[name] = f"{fields[name]}\n{value}" if name in fields else value
            continue
        if "data" in fields:
            data = _json(fields["data"])
            yield ServerEvent(fields.get("event", "message"), fields.get("id", ""), data)
        fields = {}


def _failure(status: int, raw: bytes) -> ApiFailure:
    body = _json(raw.decode("utf-8", errors="replace"))
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "message" in error:
        return ApiFailure(f"{error['message']} ({status})", status, str(error.get("code", "")))
    text = str(body).strip() or "no message"
    return ApiFailure(f"HTTP {status}: {text[:200]}", status)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
