"""What the commands of every kind of record share: the ``ACTION`` subcommands of a noun
(``vm list``, ``volume create``...), a listing's query and page, and a create's body.

A command module declares its actions with :class:`Actions` and lists with
:func:`list_records`, so ``-o``/``-c``, ``--wait``, ``--limit``/``--all``/``--page-token``/
``--sort`` and the hint that more pages exist are the same for every kind.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from cloudcore.app.client import Client
from cloudcore.app.commands._api import api_command
from cloudcore.app.commands._output import (
    Column,
    add_listing_options,
    add_output_option,
    show_page,
)

__all__ = ["Actions", "body_of", "list_records", "params_of"]


class Actions:
    """The actions of one noun: ``Actions(sub, "vm", "VMs: ...")``, then :meth:`add` each."""

    def __init__(self, sub: Any, noun: str, help: str) -> None:
        parser = sub.add_parser(noun, help=help)
        self._actions = parser.add_subparsers(
            dest=f"{noun}_command", required=True, metavar="ACTION"
        )

    @property
    def subparsers(self) -> Any:
        """argparse's subparsers, for an action declared elsewhere."""
        return self._actions

    def add(
        self,
        name: str,
        help: str,
        handler: Any,
        *,
        wait: bool = False,
        ref: str | None = None,
    ) -> argparse.ArgumentParser:
        """An action with ``-o``/``-c``; ``wait``: it starts a task ``--wait`` follows;
        ``ref``: it takes one record, by id or name, as ``id`` (``ref`` its metavar)."""
        parser: argparse.ArgumentParser = self._actions.add_parser(
            name, help=help, description=help
        )
        add_output_option(parser)
        if ref is not None:
            parser.add_argument("id", metavar=ref, help="id or name")
        if wait:
            parser.add_argument("--wait", action="store_true", help="follow the task until it ends")
        parser.set_defaults(handler=api_command(handler))
        return parser

    def listing(self, help: str, handler: Any) -> argparse.ArgumentParser:
        """``list``: with ``--limit``, ``--all``, ``--page-token`` and ``--sort``."""
        parser = self.add("list", help, handler)
        add_listing_options(parser)
        return parser


def params_of(*pairs: tuple[str, Any]) -> dict[str, str]:
    """Query parameters from (key, value) pairs: those with a value, as strings."""
    return {key: str(value) for key, value in pairs if value not in (None, "", False)}


def body_of(body: dict[str, Any], *optional: tuple[str, Any]) -> dict[str, Any]:
    """A request body: ``body``, and each optional (key, value) that is not None."""
    return body | {key: value for key, value in optional if value is not None}


async def list_records(
    client: Client,
    args: argparse.Namespace,
    path: str,
    columns: Sequence[Column],
    *filters: tuple[str, Any],
) -> int:
    """``list``: a page (or ``--all``) of ``path`` filtered by ``filters`` (key, value),
    ordered by ``--sort``, shown with the hint that more pages exist."""
    params = params_of(
        ("limit", args.limit), *filters, ("sort", args.sort), ("cursor", args.page_token)
    )
    show_page(await client.listing(path, params, all_pages=args.all_pages), args, columns)
    return 0
