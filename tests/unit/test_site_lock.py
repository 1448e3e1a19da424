"""The data directory's lock (cloudcore.app.node.site_lock): one process of a node at a time
holds it; a process killed with SIGKILL frees it, so the next one may take back its leases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cloudcore.app.node import site_lock

_HOLD = """
import sys
from pathlib import Path
from cloudcore.app.node import site_lock
with site_lock(Path(sys.argv[1])) as site:
    print(site, flush=True)
    sys.stdin.read()  # until killed
"""


def test_a_second_holder_gets_no_site_until_the_first_is_killed(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as holder:
        assert holder.stdout is not None
        site = holder.stdout.readline().strip()
        assert len(site) == 12
        with site_lock(tmp_path) as second:
            assert second is None  # the first still runs: its leases are not ours to take
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    with site_lock(tmp_path) as after:
        assert after == site  # the same site: the dead process's leases may be taken back
    with site_lock(tmp_path / ".." / tmp_path.name) as same:  # the path is resolved
        assert same == site
    assert (tmp_path / "node.lock").stat().st_mode & 0o077 == 0
