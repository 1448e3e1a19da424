"""scripts/bench chaos: deploys through a node that is killed and whose backends go away.

Prints ONE JSON object. The run starts a private PostgreSQL cluster and a private Redis (own
ports, own temporary directories) and a real ``cloudcore serve`` on them (the demo datacenter
of --hosts simulated libvirt hosts, a loopback port). Async clients submit --deploys deploys
(POST /api/v1/vms, each with its own Idempotency-Key, --window in flight). While they run,
at random points of their progress, one after the other: --kills ``kill -9`` of the node
(restarted at once), one PostgreSQL outage and one Redis outage of --outage-s seconds each.
A cut-off request is retried with the same key; a node that exits by itself is restarted (as
a service manager would) and counted. A subscriber follows ``task.finished`` on the SSE stream,
resuming with Last-Event-ID. After the last fault the tasks are watched until all are terminal
or --settle-s passes.

Measured: ``accepted`` (requests answered 202), ``lost`` (accepted tasks not terminal at the
end, or unknown to the store), ``stuck_after_60s`` (accepted tasks not terminal 60 s after the
last fault), ``duplicated`` (requests that created more than one VM), ``quota_drift`` (the
tenant's recorded usage minus what its VMs not DELETED hold, absolute, summed over vms, cpus
and memory_mib), ``events_missing`` (terminal tasks whose task.finished was never seen),
``recovery_s`` (from the end of the last fault to every accepted task terminal; --settle-s when
that never happened, with ``recovery_capped``).

Goals: lost == 0, stuck_after_60s == 0, duplicated == 0, quota_drift == 0, events_missing == 0,
recovery_s <= 30. The run always ends: a hard --deadline, and everything it started is stopped
and its directories removed, also on Ctrl-C, SIGTERM or an error (then ``completed`` is false
and ``error`` says why, with whatever was measured).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _chaos_run import Run, parse_args
from _common import emit


class Cleanup:
    """What to stop, newest first; each runs once, from whichever path gets there first."""

    def __init__(self) -> None:
        self._steps: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def push(self, step: Callable[[], None]) -> None:
        with self._lock:
            self._steps.append(step)

    def run(self) -> None:
        while True:
            with self._lock:
                if not self._steps:
                    return
                step = self._steps.pop()
            try:
                step()
            except Exception:
                traceback.print_exc(file=sys.stderr)


def _backstop(cleanup: Cleanup, run: Run, seconds: float) -> threading.Timer:
    """Past the deadline and a grace, whatever hangs: stop everything, report, exit 3."""

    def fire() -> None:
        cleanup.run()
        emit(run.report(error=f"hard deadline: the run did not end {seconds:.0f} s after start"))
        sys.stdout.flush()
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    cleanup = Cleanup()
    atexit.register(cleanup.run)
    signal.signal(signal.SIGTERM, _terminate)
    run = Run(args, cleanup.push)
    timer = _backstop(cleanup, run, args.deadline + 120)
    error: str | None = None
    try:
        asyncio.run(run.main())
    except KeyboardInterrupt as exc:
        error = f"interrupted ({exc or 'Ctrl-C'})"
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        cleanup.run()
        timer.cancel()
    error = error or run.error
    emit(run.report(error=error))
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
