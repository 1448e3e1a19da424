"""A task's progress on stderr: a rich progress bar on a terminal, one line per step otherwise."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["ProgressBar"]


class ProgressBar:
    """Shows ``update`` calls for one task; ``done`` ends it with the task's outcome.

    On a terminal a bar with the percentage and the current step is redrawn in place (rich);
    elsewhere (a pipe, a log) each step change is a line of its own, so the output reads as a
    record of what happened: ``' 33% step 2 define: RUNNING'``.
    """

    def __init__(self, label: str, out: TextIO | None = None, tty: bool | None = None) -> None:
        self._label = label
        self._out = out or sys.stderr
        self._tty = self._out.isatty() if tty is None else tty
        self._seen: set[tuple[int, str]] = set()
        self._progress = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def update(
        self, progress: float, seq: int, step: str, state: str, error: str | None = None
    ) -> None:
        """A step changed state. Repeats (the same step and state twice) are shown once."""
        if (seq, state) in self._seen:
            return
        self._seen.add((seq, state))
        self._progress = max(self._progress, progress)
        self._show(f"step {seq} {step}: {state}" + (f" ({error})" if error else ""))

    def done(self, state: str, error: str | None = None) -> None:
        self._progress = 1.0
        self._show(f"{self._label} {state}" + (f": {error}" if error else ""))
        self._stop()

    def interrupt(self, message: str) -> None:
        """End the bar before ``message`` (Ctrl-C)."""
        self._stop()
        self._line(message)

    def _show(self, text: str) -> None:
        if not self._tty:
            self._line(f"{self._progress:4.0%} {text}")
            return
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            console = Console(file=self._out, force_terminal=True, highlight=False)
            self._bar = Progress(
                BarColumn(), TaskProgressColumn(), TextColumn("{task.description}"),
                console=console, auto_refresh=False,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(text, total=1.0)
        assert self._task is not None
        self._bar.update(self._task, completed=self._progress, description=text)
        self._bar.refresh()

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _line(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()
