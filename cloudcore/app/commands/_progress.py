"""A task's progress on stderr: one redrawn line on a terminal, one line per step otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["ProgressBar"]

_WIDTH = 30


class ProgressBar:
    """Shows ``update`` calls for one task; ``done`` ends the line with the task's outcome.

    On a terminal the line is redrawn in place (``\\r``) with a bar, the percentage and the
    current step; elsewhere (a pipe, a log) each step change is a line of its own, so the output
    reads as a record of what happened.
    """

    def __init__(self, label: str, out: TextIO | None = None, tty: bool | None = None) -> None:
        self._label = label
        self._out = out or sys.stderr
        self._tty = self._out.isatty() if tty is None else tty
        self._seen: set[tuple[int, str]] = set()
        self._drawn = 0
        self._progress = 0.0

    def update(
        self, progress: float, seq: int, step: str, state: str, error: str | None = None
    ) -> None:
        """A step changed state. Repeats (the same step and state twice) are shown once."""
        if (seq, state) in self._seen:
            return
        self._seen.add((seq, state))
        self._progress = max(self._progress, progress)
        text = f"step {seq} {step}: {state}" + (f" ({error})" if error else "")
        if self._tty:
            self._redraw(f"{self._bar()} {text}")
        else:
            self._line(f"{self._percent()} {text}")

    def done(self, state: str, error: str | None = None) -> None:
        self._progress = 1.0
        text = f"{self._label} {state}" + (f": {error}" if error else "")
        if self._tty:
            self._redraw(f"{self._bar()} {text}")
            self._out.write("\n")
            self._drawn = 0
            self._out.flush()
        else:
            self._line(f"{self._percent()} {text}")

    def interrupt(self, message: str) -> None:
        """End a redrawn line before ``message`` (Ctrl-C)."""
        if self._tty and self._drawn:
            self._out.write("\n")
            self._drawn = 0
        self._line(message)

    def _percent(self) -> str:
        return f"{self._progress:4.0%}"

    def _bar(self) -> str:
        filled = int(self._progress * _WIDTH)
        return f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {self._percent()}"

    def _redraw(self, text: str) -> None:
        pad = " " * max(self._drawn - len(text), 0)
        self._out.write(f"\r{text}{pad}")
        self._out.flush()
        self._drawn = len(text)

    def _line(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()
