"""How a command meets the API: a client per command, and a failure as one line.

:func:`api_command` turns a command (an async function of a :class:`~cloudcore.app.client.Client`
and the parsed arguments) into an argparse handler. An :class:`~cloudcore.app.client.ApiFailure`
becomes ``cloudcore: <line>`` on stderr with exit code 1, the line worded by
:func:`failure_line`; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from cloudcore.app.client import ApiFailure, Client, api_url
from cloudcore.app.commands.credentials import resolve_token

__all__ = ["Command", "api_command", "failure_line"]

Command = Callable[[Client, argparse.Namespace], Awaitable[int]]


def failure_line(failure: ApiFailure) -> str:
    """The API's message then its stable code (``message [code]``); a refused token says how
    to give one; an API not reached asks whether a node runs there."""
    if failure.code is not None:
        hint = " (give a token with --token or CLOUDCORE_TOKEN)" if failure.status == 401 else ""
        return f"{failure}{hint} [{failure.code}]"
    if not failure.connected:
        return f"{failure}: is `cloudcore serve` running?"
    return str(failure)


def api_command(command: Command) -> Callable[[argparse.Namespace], int]:
    """A handler for argparse that runs ``command`` with a client, and reports failures."""

    def handler(args: argparse.Namespace) -> int:
        async def main() -> int:
            token = resolve_token(getattr(args, "token", None), args.config)
            async with Client(api_url(args.api), token) as client:
                return await command(client, args)

        try:
            return asyncio.run(main())
        except ApiFailure as exc:
            print(f"cloudcore: {failure_line(exc)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    handler.__name__ = command.__name__
    return handler
