"""The commands' HTTP client: one session per command, the token, errors as one clear line.

Every failure a user can meet here becomes :class:`CommandFailed` with a message meant for a
person (the API's own message for an error reply; what to check for a connection that fails),
which :func:`api_command` prints as ``cloudcore: <message>`` with exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from cloudcore.app.commands.credentials import resolve_token

__all__ = [
    "DEFAULT_API",
    "Client",
    "CommandFailed",
    "ServerEvent",
    "api_command",
]

DEFAULT_API = "http://127.0.0.1:8080/api/v1"

Command = Callable[["Client", argparse.Namespace], Awaitable[int]]


class CommandFailed(Exception):
    """A command cannot do what was asked; the message says why, in one line."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One Server-Sent Event: its ``id``, ``event`` type and ``data`` line(s)."""

    id: str
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data) if self.data else None


class Client:
    """JSON over HTTP to the API at ``base_url`` (ending in ``/api/v1``)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """The decoded JSON reply (None for an empty one); CommandFailed for an error reply."""
        url = self.base_url + path
        try:
            async with self._session.request(
                method, url, json=body, params=params, timeout=aiohttp.ClientTimeout(total=60)
            ) as reply:
                raw = await reply.read()
                if reply.status >= 400:
                    raise _failure(reply.status, raw)
                return json.loads(raw) if raw.strip() else None
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        except TimeoutError:
            raise CommandFailed(f"the API at {self.base_url} did not answer within 60 s") from None

    async def listing(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        all_pages: bool,
        cursor: str = "cursor",
    ) -> dict[str, Any]:
        """A listing's first page, or every page (``all_pages``) joined into one:
        ``{"items": [...], "next_cursor": ...}``. ``cursor``: the query parameter that takes the
        previous page's ``next_cursor``."""
        page: dict[str, Any] = await self.call("GET", path, params=params)
        items: list[dict[str, Any]] = list(page["items"])
        while all_pages and page.get("next_cursor"):
            page = await self.call("GET", path, params={**params, cursor: page["next_cursor"]})
            items += page["items"]
        return {"items": items, "next_cursor": page.get("next_cursor")}

    @asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str], last_event_id: str | None = None
    ) -> AsyncIterator[AsyncIterator[ServerEvent]]:
        """Open a Server-Sent Events stream (connected once this enters) and yield its events.

        The iterator ends when the server closes the stream; connection errors while reading
        raise CommandFailed.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            reply = await self._session.get(self.base_url + path, params=params, headers=headers)
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None
        try:
            if reply.status >= 400:
                raise _failure(reply.status, await reply.read())
            yield self._events(reply)
        finally:
            reply.release()

    async def _events(self, reply: aiohttp.ClientResponse) -> AsyncIterator[ServerEvent]:
        event_id, kind = "", "message"
        data: list[str] = []
        try:
            async for raw in reply.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if data:
                        yield ServerEvent(event_id, kind, "\n".join(data))
                    kind, data = "message", []
                    continue
                if line.startswith(":"):
                    continue  # a comment: the server's heartbeat
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "id":
                    event_id = value
                elif field == "event":
                    kind = value
                elif field == "data":
                    data.append(value)
        except aiohttp.ClientPayloadError:
            return  # the stream was cut: the caller reconnects if it wants more
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> CommandFailed:
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
            return CommandFailed(
                f"cannot reach the API at {self.base_url}: is `cloudcore serve` running?"
            )
        return CommandFailed(f"the connection to the API at {self.base_url} failed: {exc}")


def _failure(status: int, raw: bytes) -> CommandFailed:
    """The API's error body as one line: its message, then its stable code."""
    try:
        error = json.loads(raw)["error"]
        message, code = str(error["message"]), str(error["code"])
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip().splitlines()
        return CommandFailed(f"HTTP {status}: {text[0] if text else 'no body'}", status)
    if status == 401:
        message += " (give a token with --token or CLOUDCORE_TOKEN)"
    return CommandFailed(f"{message} [{code}]", status, code)


def api_command(command: Command) -> Callable[[argparse.Namespace], int]:
    """A handler for argparse that runs ``command`` with a client, and reports failures."""

    def handler(args: argparse.Namespace) -> int:
        async def main() -> int:
            token = resolve_token(getattr(args, "token", None), args.config)
            async with Client(args.api, token) as client:
                return await command(client, args)

        try:
            return asyncio.run(main())
        except CommandFailed as exc:
            print(f"cloudcore: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    handler.__name__ = command.__name__
    return handler
