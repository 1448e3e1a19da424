"""``cloudcore console``: the operator's interactive shell over a node's HTTP API.

::

    cloudcore console [--api URL] [--token TOKEN]

The API is ``--api``, else ``$CLOUDCORE_API_URL``, else ``http://127.0.0.1:8080/api/v1``
(:func:`cloudcore.app.client.api_url`). The
token is ``--token``, else ``$CLOUDCORE_TOKEN``, else the admin token a node on this machine
wrote to ``<data_dir>/admin-token`` (``data_dir`` from the settings, as for ``serve``). History
is kept in ``$CLOUDCORE_HISTORY``, else ``~/.cloudcore_history``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloudcore.app.client import API_URL_ENV, DEFAULT_API, ApiFailure, BlockingClient, api_url
from cloudcore.app.commands.credentials import resolve_token
from cloudcore.app.console import _render
from cloudcore.app.console.shell import Console

__all__ = ["Console", "add_parser"]

_HISTORY_LENGTH = 1000


def add_parser(sub: Any) -> None:
    """Register ``console`` on the ``cloudcore`` command line."""
    console = sub.add_parser("console", help="an interactive shell for operators")
    # SUPPRESS: an --api or --token given before the subcommand (cloudcore --token T console)
    # is not overwritten by this parser's defaults.
    console.add_argument(
        "--api",
        default=argparse.SUPPRESS,
        help=f"the API's base URL (default: ${API_URL_ENV}, else {DEFAULT_API})",
    )
    console.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="API token (default: $CLOUDCORE_TOKEN or <data_dir>/admin-token)",
    )
    console.set_defaults(handler=_console)


def _console(args: argparse.Namespace) -> int:
    token = resolve_token(getattr(args, "token", None), getattr(args, "config", None))
    with BlockingClient(api_url(getattr(args, "api", None)), token) as client:
        console = Console(client)
        if token is None:
            console._say(
                "warning: no API token (--token, $CLOUDCORE_TOKEN, or a node's admin-token "
                "file); every command will be refused"
            )
        if not _greet(console, client, token is not None):
            return 1
        with _history():
            console.run()
    return 0


def _greet(console: Console, client: BlockingClient, check_token: bool) -> bool:
    """Say which node answers; False (after saying why) if it refuses the token, so a bad
    token is reported before the prompt rather than at every command."""
    try:
        health = client.get("/health")
        if check_token:
            client.get("/users/me")
    except ApiFailure as exc:
        if exc.status == 401:
            console._say(f"error: {_render.failure(exc)} (give another with --token)")
            return False
        console._say(f"warning: {_render.failure(exc)}")
        return True
    console._say(
        f"connected to node {health['node']} (cloudcore {health['version']}) at {client.base_url}"
    )
    return True


@contextlib.contextmanager
def _history() -> Iterator[None]:
    """Readline history from and back to the history file; Tab completes."""
    try:
        import readline
    except ImportError:  # no readline (Windows): the console works, without history
        yield
        return
    path = Path(os.environ.get("CLOUDCORE_HISTORY") or Path.home() / ".cloudcore_history")
    readline.set_completer_delims(" \t\n")  # an actor path is one word, slashes and dashes in it
    readline.set_history_length(_HISTORY_LENGTH)
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            readline.write_history_file(path)
