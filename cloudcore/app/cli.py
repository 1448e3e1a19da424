"""The ``cloudcore`` command line.

Each subcommand is a small function; ``main`` only parses arguments and dispatches. Subcommands
that other parts of cloudcore add register themselves in ``_build_parser``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cloudcore import __version__
from cloudcore.app.client import API_URL_ENV, DEFAULT_API

__all__ = ["main"]

_DESCRIPTION = """cloudcore: an actor-model IaaS orchestrator. `cloudcore serve` runs a node; `vm`,
`network`, `host`, `datacenter`, `template`, `task` and `events` drive a running node through
its HTTP API (--api, --token; a VM, host, datacenter or template by id or by name);
`console` opens the operator console; `db` and `token` act on the store of this machine."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudcore", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cloudcore {__version__}")
    parser.add_argument("--config", help="settings file (default: conf/default.toml)")
    parser.add_argument(
        "--api",
        metavar="URL",
        help="the API the vm, host, task, events and console commands use "
        f"(default: ${API_URL_ENV}, else {DEFAULT_API})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CLOUDCORE_TOKEN"),
        help="API token (env CLOUDCORE_TOKEN; default: <node.data_dir>/admin-token if readable)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node (all-in-one on embedded defaults)")
    serve.add_argument(
        "--profile",
        choices=["monolithic", "server", "remote-services"],
        help="what the node runs (default: [node] profile): everything; the API and the "
        "cluster-wide services; or the datacenters its capabilities name",
    )
    serve.set_defaults(handler=_serve)

    db = sub.add_parser(
        "db",
        help="the store: upgrade its schema, show its version, or reconcile quota usage with "
        "what exists (--dry-run: report only)",
    )
    db.add_argument("action", choices=["upgrade", "status", "reconcile"])
    db.add_argument("--dry-run", action="store_true", help="reconcile: report drift, fix none")
    db.set_defaults(handler=_db)

    from cloudcore.app.commands import datacenter, events, host, network, task, template, vm, volume

    vm.add_parser(sub)
    volume.add_parser(sub)
    network.add_parser(sub)
    datacenter.add_parser(sub)
    template.add_parser(sub)
    from cloudcore.app.commands import token

    token.add_parser(sub)
    host.add_parser(sub)
    task.add_parser(sub)
    events.add_parser(sub)
    from cloudcore.app import console

    console.add_parser(sub)
    return parser


def _db(args: argparse.Namespace) -> int:
    from cloudcore.store.admin import db_command

    config: str | None = args.config
    return db_command(args.action, config, dry_run=args.dry_run)


def _serve(args: argparse.Namespace) -> int:
    from cloudcore.app.node import serve

    config: str | None = args.config
    profile: str | None = args.profile
    return serve(config=config, profile=profile)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Never a Python trace for the user: a closed pipe (``| head``) ends
    quietly, anything unforeseen is one line (``CLOUDCORE_DEBUG=1`` shows the trace)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    try:
        code: int = handler(args)
    except BrokenPipeError:
        return _pipe_closed()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("CLOUDCORE_DEBUG"):
            raise
        print(
            f"cloudcore: {type(exc).__name__}: {exc} (CLOUDCORE_DEBUG=1 shows where)",
            file=sys.stderr,
        )
        return 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _pipe_closed()
    return code


def _pipe_closed() -> int:
    """The reader went away: nothing more to say, and nothing to say it with. Point stdout at
    /dev/null so the interpreter's final flush does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # as a shell reports a command ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
