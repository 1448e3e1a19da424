"""The HTTP client of the API, shared by the command line and the console.

One :class:`Client` (async, aiohttp) speaks JSON and Server-Sent Events to a node's API at
``/api/v1``; the console drives the same client through :class:`BlockingClient`. Every failure
a caller can meet is an :class:`ApiFailure` whose ``str()`` says what went wrong for a person,
without any face's advice: the CLI and the console each word it for their user (the CLI as
``message [code]``, the console as ``message (status)``) and add what to check.

Which API: :func:`api_url` (given, else ``$CLOUDCORE_API_URL``, else :data:`DEFAULT_API`).
The token travels only in the ``Authorization`` header: no message, log line or ``repr`` here
carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from cloudcore.errors import CloudcoreError

__all__ = [
    "API_URL_ENV",
    "DEFAULT_API",
    "ApiFailure",
    "BlockingClient",
    "Client",
    "ServerEvent",
    "SseDecoder",
    "api_url",
    "failure_of_reply",
]

DEFAULT_API = "http://127.0.0.1:8080/api/v1"
API_URL_ENV = "CLOUDCORE_API_URL"

#: Seconds one request may take (an ``ask`` at the API waits less than this).
REQUEST_TIMEOUT = 60.0
_CONNECT_TIMEOUT = 10.0
_TEXT_LIMIT = 200

_T = TypeVar("_T")
Params = Mapping[str, str | int | float | None]


def api_url(given: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The API's base URL: ``given`` (``--api``), else ``$CLOUDCORE_API_URL``, else
    :data:`DEFAULT_API`. An empty value counts as not given."""
    env = os.environ if environ is None else environ
    return (given or "").strip() or env.get(API_URL_ENV, "").strip() or DEFAULT_API


class ApiFailure(CloudcoreError):
    """A call to the API failed; ``str()`` is what went wrong, in one line for a person.

    - An error reply: ``status`` is its HTTP status. When the body is the API's error body
      (``{"error": {code, message, details, request_id}}``) ``str()`` is its message and
      ``code``, ``details`` and ``request_id`` are set; otherwise ``str()`` is
      ``HTTP <status>: <first line of the body>`` and ``code`` is None.
    - No reply: ``status`` is None. ``connected`` is False when the API could not be reached at
      all (refused, no such host: the face says what to check), True when the connection broke
      or the reply did not come in time. Both are ``retryable``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        connected: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details: dict[str, Any] = dict(details or {})
        self.request_id = request_id
        self.connected = connected
        self.retryable = status is None


def failure_of_reply(status: int, raw: bytes) -> ApiFailure:
    """The :class:`ApiFailure` an error reply (``status`` >= 400, body ``raw``) stands for."""
    try:
        error = json.loads(raw)["error"]
        message, code = str(error["message"]), str(error["code"])
    except (ValueError, KeyError, TypeError):
        lines = raw.decode("utf-8", "replace").strip().splitlines()
        text = lines[0][:_TEXT_LIMIT] if lines else "no body"
        return ApiFailure(f"HTTP {status}: {text}", status=status)
    details = error.get("details")
    return ApiFailure(
        message,
        status=status,
        code=code,
        details=details if isinstance(details, dict) else None,
        request_id=str(error["request_id"]) if error.get("request_id") else None,
    )


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One Server-Sent Event: its ``id`` (the last one the stream gave, ``""`` before any),
    ``event`` type (``"message"`` when unnamed) and ``data`` (its lines joined by newlines)."""

    id: str
    event: str
    data: str

    def json(self) -> Any:
        """``data`` decoded from JSON; None when empty."""
        return json.loads(self.data) if self.data else None


class SseDecoder:
    """Lines of a ``text/event-stream`` in, :class:`ServerEvent` out (the WHATWG rules).

    A blank line ends an event; one without data is dropped. ``id`` carries over to the events
    after it until another ``id`` line; ``event`` does not. Comments (``:`` first) are the
    server's heartbeat and are skipped; so are fields this client has no use for (``retry``).
    """

    def __init__(self) -> None:
        self._id = ""
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> ServerEvent | None:
        """Take one line (its line ending may still be on it); the event it completes, if any."""
        line = line.rstrip("\r\n")
        if not line:
            data, self._data = self._data, []
            event, self._event = self._event or "message", ""
            return ServerEvent(self._id, event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        return None


class Client:
    """JSON over HTTP to the API at ``base_url`` (ending in ``/api/v1``), with a bearer
    ``token``. Make it (or enter it) inside the event loop that will use it; close it once."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT),
        )

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def call(
        self, method: str, path: str, *, body: Any = None, params: Params | None = None
    ) -> Any:
        """The decoded JSON reply (None for an empty one). ApiFailure for an error reply, an
        API that cannot be reached, or no reply within :data:`REQUEST_TIMEOUT`."""
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                json=body,
                params=_query(params),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as reply:
                raw = await reply.read()
                if reply.status >= 400:
                    raise failure_of_reply(reply.status, raw)
                return json.loads(raw) if raw.strip() else None
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        except TimeoutError:
            raise ApiFailure(
                f"the API at {self.base_url} did not answer within {REQUEST_TIMEOUT:g} s"
            ) from None

    async def send_body(
        self,
        method: str,
        path: str,
        body: AsyncIterator[bytes],
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Stream ``body`` (chunks, never joined) as an octet-stream; the decoded JSON reply.
        No overall timeout (a large image takes what it takes); ApiFailure as :meth:`call`,
        with ``connected`` True for a connection cut mid-body (the caller may resume)."""
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                data=body,
                params=_query(params),
                headers={"Content-Type": "application/octet-stream", **(headers or {})},
            ) as reply:
                raw = await reply.read()
                if reply.status >= 400:
                    raise failure_of_reply(reply.status, raw)
                return json.loads(raw) if raw.strip() else None
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None

    async def listing(
        self, path: str, params: Params, *, all_pages: bool, cursor: str = "cursor"
    ) -> dict[str, Any]:
        """A listing's first page, or every page (``all_pages``) joined into one:
        ``{"items": [...], "next_cursor": ..., "total": ...}`` (``total`` when the API counts).
        ``cursor``: the query parameter that takes the previous page's ``next_cursor``."""
        page: dict[str, Any] = await self.call("GET", path, params=params)
        items: list[Any] = list(page["items"])
        total = page.get("total")
        while all_pages and page.get("next_cursor"):
            page = await self.call("GET", path, params={**params, cursor: page["next_cursor"]})
            items += page["items"]
        listing = {"items": items, "next_cursor": page.get("next_cursor")}
        return listing if total is None else {**listing, "total": total}

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, params: Params | None = None, last_event_id: str | None = None
    ) -> AsyncIterator[AsyncIterator[ServerEvent]]:
        """Open a Server-Sent Events stream (connected once this enters; an error reply raises
        here) and yield its events. The iterator ends when the server closes the stream or the
        stream is cut; a connection that fails while reading raises ApiFailure."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            reply = await self._session.get(
                self.base_url + path, params=_query(params), headers=headers
            )
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        try:
            if reply.status >= 400:
                raise failure_of_reply(reply.status, await reply.read())
            yield self._events(reply)
        finally:
            reply.release()

    async def _events(self, reply: aiohttp.ClientResponse) -> AsyncIterator[ServerEvent]:
        decoder = SseDecoder()
        try:
            async for raw in reply.content:
                event = decoder.feed(raw.decode("utf-8", "replace"))
                if event is not None:
                    yield event
        except aiohttp.ClientPayloadError:
            return  # the stream was cut: the caller reconnects if it wants more
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: aiohttp.ClientConnectionError) -> ApiFailure:
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
            return ApiFailure(f"cannot reach the API at {self.base_url}", connected=False)
        return ApiFailure(f"the connection to the API at {self.base_url} failed: {exc}")


def _query(params: Params | None) -> dict[str, str] | None:
    """Query parameters as strings; a None value is left out."""
    if params is None:
        return None
    return {key: str(value) for key, value in params.items() if value is not None}


class BlockingClient:
    """The :class:`Client` for a blocking caller (the console), each call run to its end on a
    private event loop (:class:`asyncio.Runner`).

    Ctrl-C during a call cancels it (the connection is dropped, the session stays usable) and
    raises KeyboardInterrupt in the caller, as a blocking call would. Not for use from inside a
    running event loop. Close it once (or use it as a context manager).
    """

    def __init__(self, base_url: str, token: str | None) -> None:
        self._runner = asyncio.Runner()
        self._client = self._run(_open(base_url, token))
        self.base_url = self._client.base_url

    def __repr__(self) -> str:
        return f"BlockingClient({self.base_url!r})"

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._runner.close()

    def call(
        self, method: str, path: str, *, body: Any = None, params: Params | None = None
    ) -> Any:
        """As :meth:`Client.call`."""
        return self._run(self._client.call(method, path, body=body, params=params))

    def get(self, path: str, params: Params | None = None) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body=body)

    @contextlib.contextmanager
    def stream(
        self, path: str, params: Params | None = None, last_event_id: str | None = None
    ) -> Iterator[Iterator[ServerEvent]]:
        """As :meth:`Client.stream`: connected once this enters; leaving closes the stream."""
        opened = self._client.stream(path, params, last_event_id)
        events = self._run(opened.__aenter__())
        try:
            yield self._iterate(events)
        finally:
            self._run(opened.__aexit__(None, None, None))

    def _iterate(self, events: AsyncIterator[ServerEvent]) -> Iterator[ServerEvent]:
        while (event := self._run(_next(events))) is not None:
            yield event

    def _run(self, step: Coroutine[Any, Any, _T]) -> _T:
        return self._runner.run(step)


async def _open(base_url: str, token: str | None) -> Client:
    return Client(base_url, token)  # the session binds to the loop it is made in


async def _next(events: AsyncIterator[ServerEvent]) -> ServerEvent | None:
    async for event in events:
        return event
    return None
