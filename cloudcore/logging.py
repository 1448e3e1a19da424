"""structlog set up once per process.

JSON lines when the output is not a terminal (production, CI, log shippers); the console renderer on
a terminal. Event names are ``noun.verb`` (``actor.restarted``); context such as ``actor`` or
``vm_id`` is bound by the caller.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

LogFormat = Literal["auto", "json", "console"]


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog (and the stdlib root logger it shares output with).

    Safe to call again: the last call wins. ``level`` is one of debug, info, warning, error.
    """
    try:
        numeric = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level {level!r} is not one of {', '.join(_LEVELS)}") from None
    console = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if not console else _passthrough,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(name)s %(message)s", force=True)


def _passthrough(_: Any, __: str, event: Any) -> Any:
    return event


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger named ``name`` with ``bound`` context."""
    return structlog.get_logger(name, **bound)
