"""Duplicate suppression: the ids of recent messages, optionally journaled to survive a crash.

At-least-once delivery (redelivery after a lost ack, republish after a lost confirm) means a
message can arrive twice. A message is named by its sender's incarnation and a counter; the
window remembers the last ``size`` names seen.

With a journal, the names of *handled* persistent messages are appended to a file as each is
handled (one ``write`` each; no fsync: it must survive the process, not the machine), and read
back at start. A node killed after handling a message but before acknowledging it then drops
the redelivered copy. What stays open is the instant between the handler returning and the
journal write.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

__all__ = ["DedupWindow"]

Key = tuple[int, int]


class DedupWindow:
    """The last ``size`` message keys, in arrival order; O(1) per message."""

    def __init__(self, size: int, journal: str | os.PathLike[str] | None = None) -> None:
        self._size = size
        self._order: deque[Key] = deque()
        self._seen: set[Key] = set()
        self._fd: int | None = None
        self._journal = Path(journal) if journal is not None else None
        self._journaled = 0
        if self._journal is not None:
            self._load(self._journal)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: Key) -> bool:
        return key in self._seen

    def add(self, key: Key) -> bool:
        """Remember ``key``; False if it was already there (a duplicate)."""
        seen = self._seen
        if key in seen:
            return False
        seen.add(key)
        order = self._order
        order.append(key)
        if len(order) > self._size:
            seen.discard(order.popleft())
        return True

    def handled(self, key: Key) -> None:
        """Journal ``key`` as handled (no-op without a journal)."""
        fd = self._fd
        if fd is None:
            return
        os.write(fd, b"%d %d\n" % key)
        self._journaled += 1
        if self._journaled >= self._size:
            self._rotate()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # Two files: the current journal and the previous one. When the current one holds a full
    # window it becomes the previous one, so the files never hold more than two windows.

    def _load(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for part in (path.with_suffix(path.suffix + ".old"), path):
            try:
                lines = part.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) == 2:  # a torn last line from a crash is skipped
                    self.add((int(fields[0]), int(fields[1])))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _rotate(self) -> None:
        assert self._journal is not None and self._fd is not None
        os.close(self._fd)
        os.replace(self._journal, self._journal.with_suffix(self._journal.suffix + ".old"))
        self._fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._journaled = 0
