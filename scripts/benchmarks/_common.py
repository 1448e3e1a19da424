"""Helpers shared by the benchmark suites: medians over rounds, resident memory, JSON output."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from typing import Any


def median_of(rounds: int, measure: Callable[[], float]) -> float:
    """The median of ``rounds`` calls of ``measure``."""
    return statistics.median(measure() for _ in range(rounds))


def rss_bytes() -> int:
    """Resident set size of this process, from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize()


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON object a suite produces."""
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
