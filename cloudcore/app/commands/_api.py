"""How a command meets the API: a client per command, and a failure as one line.

:func:`api_command` turns a command (an async function of a :class:`~cloudcore.app.client.Client`
and the parsed arguments) into an argparse handler. An :class:`~cloudcore.app.client.ApiFailure`
or a :class:`CliError` becomes ``cloudcore: <line>`` on stderr with exit code 1, the line worded
by :func:`failure_line`, or under ``-o json`` the API's error body as JSON; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import yarl

from cloudcore.app.client import ApiFailure, Client, api_url
from cloudcore.app.commands.credentials import resolve_token
from cloudcore.errors import CloudcoreError

__all__ = ["CliError", "Command", "api_command", "error_body", "failure_line", "report"]

Command = Callable[[Client, argparse.Namespace], Awaitable[int]]

_EXAMPLE = "http://127.0.0.1:8080/api/v1"


class CliError(CloudcoreError):
    """What the command line itself refuses (an ambiguous name, an unknown column): a line for
    the user, and the code and details its JSON form carries."""

    def __init__(self, message: str, code: str = "invalid_value", **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


def failure_line(failure: ApiFailure) -> str:
    """The API's message then its stable code (``message [code]``); a refused token says how
    to give one; an API not reached asks whether a node runs there."""
    if failure.code is not None:
        hint = " (give a token with --token or CLOUDCORE_TOKEN)" if failure.status == 401 else ""
        return f"{failure}{hint} [{failure.code}]"
    if not failure.connected:
        return f"{failure}: is `cloudcore serve` running?"
    return str(failure)


def error_body(exc: ApiFailure | CliError) -> dict[str, Any]:
    """The error as the API's body says one: ``{"error": {code, message, details, ...}}``."""
    if isinstance(exc, CliError):
        return {"error": {"code": exc.code, "message": str(exc), "details": exc.details}}
    code = exc.code or ("unreachable" if not exc.connected else "failed")
    error: dict[str, Any] = {"code": code, "message": str(exc), "details": exc.details}
    if exc.status is not None:
        error["status"] = exc.status
    if exc.request_id:
        error["request_id"] = exc.request_id
    return {"error": error}


def report(exc: ApiFailure | CliError, output: str | None) -> int:
    """Say what failed on stderr (JSON under ``-o json``); exit code 1."""
    if output == "json":
        sys.stderr.write(json.dumps(error_body(exc)) + "\n")
    else:
        line = failure_line(exc) if isinstance(exc, ApiFailure) else str(exc)
        sys.stderr.write(f"cloudcore: {line}\n")
    return 1


def _checked_url(given: str | None) -> str:
    url = api_url(given)
    try:
        parsed = yarl.URL(url)
        usable = parsed.scheme in ("http", "https") and bool(parsed.host)
        reason = "" if usable else "not an http(s) URL"
    except ValueError as exc:
        reason = str(exc)
    if reason:
        raise CliError(f"the API URL {url!r} is unusable ({reason}); like {_EXAMPLE}")
    return url


def api_command(command: Command) -> Callable[[argparse.Namespace], int]:
    """A handler for argparse that runs ``command`` with a client, and reports failures."""

    def handler(args: argparse.Namespace) -> int:
        async def main() -> int:
            url = _checked_url(args.api)
            token = resolve_token(getattr(args, "token", None), args.config)
            async with Client(url, token) as client:
                return await command(client, args)

        try:
            return asyncio.run(main())
        except (ApiFailure, CliError) as exc:
            return report(exc, getattr(args, "output", None))
        except KeyboardInterrupt:
            return 130

    handler.__name__ = command.__name__
    return handler
