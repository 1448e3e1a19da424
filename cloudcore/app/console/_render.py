"""Plain-text renderings of what the API answers: tables, the actor tree, one actor."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cloudcore.app.client import API_URL_ENV, ApiFailure

__all__ = ["actor", "event_line", "failure", "table", "tree"]


def failure(error: ApiFailure) -> str:
    """The API's message then the HTTP status (``message (status)``); an API not reached says
    what to check."""
    if error.code is not None:
        return f"{error} ({error.status})"
    if not error.connected:
        return f"{error} (is the node running? --api or {API_URL_ENV} names another)"
    return str(error)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart; the header in capitals."""
    cells = [
        [str(h).upper() for h in headers],
        *[["" if c is None else str(c) for c in r] for r in rows],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def tree(root: Mapping[str, Any]) -> str:
    """The actor tree, one actor per line, children indented under their parent."""
    lines = list(_tree_lines(root, 0))
    name_width = max(len(label) for label, _ in lines)
    class_width = max(len(info["class_name"]) for _, info in lines)
    out = []
    for label, info in lines:
        text = (
            f"{label.ljust(name_width)}  {info['class_name'].ljust(class_width)}  "
            f"{info['status']:<10}  mailbox {info['mailbox_depth']:<4}  "
            f"processed {info['processed']:<6}  restarts {info['restarts']}"
        )
        if info.get("last_failure"):
            text += f"  last failure: {info['last_failure']}"
        out.append(text)
    return "\n".join(out)


def _tree_lines(info: Mapping[str, Any], depth: int) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield ("  " * depth + (info["path"] if depth == 0 else info["name"]), info)
    for child in info.get("children", ()):
        yield from _tree_lines(child, depth + 1)


def actor(info: Mapping[str, Any]) -> str:
    """One actor, a field per line."""
    children = info.get("children") or []
    rows = [
        ("path", info["path"]),
        ("node", info.get("node", "")),
        ("class", info["class_name"]),
        ("status", info["status"]),
        ("mailbox", info["mailbox_depth"]),
        ("processed", info["processed"]),
        ("restarts", info["restarts"]),
        ("last failure", info.get("last_failure") or "-"),
        ("children", f"{len(children)}: {', '.join(children)}" if children else "none"),
    ]
    return "\n".join(f"{key + ':':<14}{value}" for key, value in rows)


def event_line(event: Mapping[str, Any]) -> str:
    """``time  type  subject  data`` on one line."""
    data = event.get("data") or {}
    shown = json.dumps(data, separators=(",", ":")) if data else ""
    if len(shown) > 120:
        shown = shown[:117] + "..."
    fields = (event.get("time", ""), event.get("type", ""), event.get("subject", ""), shown)
    return "  ".join(str(f) for f in fields).rstrip()
