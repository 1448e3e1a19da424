"""scripts/bench storage: iSCSI volumes through the HTTP API and the storage actors, against the
raw tools doing the same work, in the same run, on the same tgtd and libvirtd.

Prints ONE JSON object. A private tgtd (its own control socket and loopback portal) serves a tgt
pool; a real QEMU guest runs under libvirtd (started here if it is not running, stopped after if
we started it and nothing else uses it). The node (SQLite store, one QEMU host, the pool) runs
in this process with its HTTP gateway; requests go over loopback HTTP with an admin token, and a
request counts as done when its task has ended (the in-process task waiter: what an SSE client
would see).

- ``volume_create_export_p50_ms``: POST /volumes (a 1 GiB sparse LUN) then POST attach to the
  running guest (export: CHAP account, target, LUN, ACL; then libvirt's hot attach), each to
  its task's end. ``raw_tgtadm_create_export_p50_ms``: the same work by hand: the sparse file,
  the five tgtadm commands, the libvirt secret and ``attachDeviceFlags`` of the same disk XML.
- ``attach_p50_ms`` / ``raw_attach_p50_ms``: the attach half of the above.
- ``detach_p50_ms`` / ``raw_detach_p50_ms``: hot detach and unexport.
- ``volumes_per_s`` / ``raw_volumes_per_s``: create+delete cycles with --clients concurrent
  clients (through the API; by hand: create the sparse file, remove it).

Goals: volume_create_export_p50_ms <= 1.5 x raw, attach_p50_ms <= 1.5 x raw,
volumes_per_s >= 0.5 x raw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import libvirt  # noqa: E402
import msgspec  # noqa: E402
from _common import emit  # noqa: E402

from cloudcore.app.gateway import Gateway, start_api  # noqa: E402
from cloudcore.app.gateway.app import bound_port  # noqa: E402
from cloudcore.config import PoolSettings, StorageConfig  # noqa: E402
from cloudcore.logging import configure_logging  # noqa: E402
from cloudcore.store.records import VM, Role, TaskState, VMSpec  # noqa: E402
from cloudcore.store.sqlite import SqliteStore  # noqa: E402
from hypervisor_drivers.libvirt import _xml  # noqa: E402
from hypervisor_drivers.types import IscsiDisk  # noqa: E402
from tests.cloud import cloud_settings, start_cloud  # noqa: E402
from tests.component.gateway.conftest import make_user  # noqa: E402
from tests.contract.storage.tgtd import Tgtd, why_not_runnable  # noqa: E402
from tests.integration.orchestrator.test_real_libvirt import _datacenter_on  # noqa: E402

URI = "qemu:///system"
GOALS = {"create_export": 1.5, "attach": 1.5, "volumes_per_s": 0.5}
DAEMONS = (
    ("virtlogd", Path("/run/libvirt/virtlogd-sock")),
    ("libvirtd", Path("/run/libvirt/libvirt-sock")),
)
INITIATOR = "iqn.2026-12.org.cloudcore.bench:raw"


def _p50(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


@contextlib.contextmanager
def _libvirtd() -> Iterator[None]:
    """libvirtd and virtlogd running; those started here are stopped after, by PID, unless
    they have guests or clients of others then."""
    started = []
    for daemon, socket in DAEMONS:
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode == 0:
            continue
        if subprocess.run([daemon, "-d"], timeout=30).returncode == 0:
            pidfile = Path(f"/run/{daemon}.pid")
            for _ in range(300):
                if pidfile.exists() and pidfile.read_text().strip() and socket.exists():
                    break
                time.sleep(0.05)  # a daemon coming up: nothing to await but its files
            started.append(int(pidfile.read_text()))
    try:
        yield
    finally:
        running = subprocess.run(
            ["virsh", "-q", "-c", URI, "list", "--name"], capture_output=True, text=True
        ).stdout.split()
        if not running:
            for pid in reversed(started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 15)


class Api:
    def __init__(self, base: str, token: str, session: aiohttp.ClientSession, storage: Any):
        self.base, self.session, self.storage = base, session, storage
        self.headers = {"Authorization": f"Bearer {token}"}

    async def task(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """A request that answers 202 with a task; returns the task once it has ended."""
        async with self.session.request(
            method, self.base + path, json=body, headers=self.headers
        ) as r:
            reply = await r.json()
            if r.status != 202:
                raise RuntimeError(f"{method} {path}: {r.status} {reply}")
        done = await self.storage.wait(reply["id"], 120)
        if done.state is not TaskState.SUCCEEDED:
            raise RuntimeError(f"{method} {path}: task {done.id} {done.state}: {done.error}")
        return dict(reply)


async def _timed(action: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await action()
    return time.perf_counter() - began, result


# -- the raw tools -----------------------------------------------------------------------------


class Raw:
    """The same work by hand: tgtadm processes and libvirt calls, nothing else."""

    def __init__(self, tgtd: Tgtd, pool: Path, conn: Any, domain: Any) -> None:
        self.tgtd, self.pool, self.conn, self.domain = tgtd, pool, conn, domain
        self.tid = 900  # away from the driver's tids

    async def tgtadm(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "tgtadm", "-C", str(self.tgtd.control_port), "--lld", "iscsi", *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"tgtadm {' '.join(args)}: {err.decode().strip()}")

    def create(self, name: str) -> Path:
        path = self.pool / f"{name}.img"
        with path.open("wb"):
            pass
        os.truncate(path, 1 << 30)
        return path

    async def attach(self, name: str, path: Path) -> tuple[int, IscsiDisk, str]:
        self.tid += 1
        tid, user, password = str(self.tid), f"raw-{name}", secrets.token_hex(8)
        iqn = f"iqn.2026-12.org.cloudcore.bench:{name}"
        await self.tgtadm(
            "--op", "new", "--mode", "account", "--user", user, "--password", password
        )
        await self.tgtadm("--op", "new", "--mode", "target", "--tid", tid, "--targetname", iqn)
        await self.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", "1",
                          "--backing-store", str(path))  # fmt: skip
        await self.tgtadm("--op", "bind", "--mode", "account", "--tid", tid, "--user", user)
        await self.tgtadm("--op", "bind", "--mode", "target", "--tid", tid,
                          "--initiator-name", INITIATOR)  # fmt: skip
        disk = IscsiDisk(host="127.0.0.1", port=self.tgtd.portal_port, iqn=iqn, lun=1,
                         chap_username=user, chap_password=password, initiator=INITIATOR,
                         serial=name)  # fmt: skip
        dev = f"sd{chr(ord('b') + self.tid % 20)}"
        xml = _xml.disk_xml(disk, dev)

        def hot_attach() -> None:
            secret = self.conn.secretDefineXML(_xml.iscsi_secret_xml(disk), 0)
            secret.setValue(password.encode(), 0)
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            self.domain.attachDeviceFlags(xml, flags)

        await asyncio.to_thread(hot_attach)
        return self.tid, disk, xml

    async def detach(self, tid: int, disk: IscsiDisk, xml: str) -> None:
        def hot_detach() -> None:
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            self.domain.detachDeviceFlags(xml, flags)
            self.conn.secretLookupByUsage(
                libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, _xml.iscsi_secret_usage(disk)
            ).undefine()

        await asyncio.to_thread(hot_detach)
        await self.tgtadm("--op", "delete", "--mode", "target", "--force", "--tid", str(tid))
        await self.tgtadm("--op", "delete", "--mode", "account", "--user", str(disk.chap_username))


# -- the run -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _node(work: Path, tgtd: Tgtd) -> AsyncIterator[tuple[Api, VM, Any]]:
    pool = PoolSettings(
        id="bench-pool",
        datacenter="dc1",
        driver="tgt",
        path=str(work / "pool"),
        portal_port=tgtd.portal_port,
        iqn_prefix=f"iqn.2026-12.org.cloudcore.bench{uuid.uuid4().hex[:6]}",
        overcommit=100.0,
        extra={"control_port": str(tgtd.control_port), "timeout_s": "30"},
    )
    settings = cloud_settings(work, sweep_interval=3600.0, step_deadline=120.0)
    settings = msgspec.structs.replace(
        settings,
        storage=StorageConfig(pools=[pool]),
        api=msgspec.structs.replace(settings.api, port=0, rate_limit=1e6, rate_burst=1_000_000),
    )
    store = await SqliteStore.connect(work / "cloudcore.db")
    await store.upgrade()
    domain_type = os.environ.get("CLOUDCORE_TEST_DOMAIN_TYPE", "kvm")
    await _datacenter_on(store, settings, URI, domain_type=domain_type)
    system, orchestrator = await start_cloud(store, settings, {})
    runner = await start_api(Gateway.of(settings, system, orchestrator))
    try:
        _, token = await make_user(store, "t1", "bench", Role.ADMIN)
        task = await orchestrator.deploy(
            tenant_id="t1", datacenter_id="dc1", name="bench", spec=VMSpec(cpus=1, memory_mib=64)
        )
        done = await orchestrator.wait(task.id, 120)
        if done.error is not None:
            raise RuntimeError(f"the guest did not start ({domain_type}): {done.error}")
        vm = await store.get(VM, task.subject.removeprefix("vm/"))
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{bound_port(runner)}/api/v1"
            yield Api(base, token, session, orchestrator.storage), vm, orchestrator
    finally:
        await runner.cleanup()
        await system.shutdown()
        await store.close()
        for verb in ("destroy", "undefine"):
            await asyncio.to_thread(
                subprocess.run, ["virsh", "-q", "-c", URI, verb, f"cc-{vm.id}"], capture_output=True
            )


async def _through_api(api: Api, vm: VM, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"create": [], "attach": [], "detach": [], "delete": []}
    body = {"name": "bench", "datacenter_id": "dc1", "size_gib": 1}
    for _ in range(rounds):
        took, task = await _timed(partial(api.task, "POST", "/volumes", body))
        times["create"].append(took)
        path = f"/volumes/{task['subject'].removeprefix('volume/')}"
        for name, call in (
            ("attach", partial(api.task, "POST", f"{path}/attach", {"vm_id": vm.id})),
            ("detach", partial(api.task, "POST", f"{path}/detach")),
            ("delete", partial(api.task, "DELETE", path)),
        ):
            took, _ = await _timed(call)
            times[name].append(took)
    return times


async def _by_hand(raw: Raw, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"create": [], "attach": [], "detach": []}
    for n in range(rounds):
        name = f"raw{n}-{uuid.uuid4().hex[:6]}"
        began = time.perf_counter()
        path = await asyncio.to_thread(raw.create, name)
        times["create"].append(time.perf_counter() - began)
        took, (tid, disk, xml) = await _timed(partial(raw.attach, name, path))
        times["attach"].append(took)
        took, _ = await _timed(partial(raw.detach, tid, disk, xml))
        times["detach"].append(took)
        path.unlink()
    return times


async def _rate(clients: int, cycles: int, cycle: Callable[[int], Awaitable[None]]) -> float:
    async def client(c: int) -> None:
        for n in range(cycles):
            await cycle(c * cycles + n)

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return round(clients * cycles / (time.perf_counter() - began), 1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cc-bench-storage-"))
    tgtd = Tgtd(work)
    tgtd.start()
    try:
        with _libvirtd():
            async with _node(work, tgtd) as (api, vm, _):
                api_times = await _through_api(api, vm, args.rounds)
                body = {"name": "bench", "datacenter_id": "dc1", "size_gib": 1}

                async def api_cycle(_: int) -> None:
                    task = await api.task("POST", "/volumes", body)
                    await api.task("DELETE", f"/volumes/{task['subject'].removeprefix('volume/')}")

                volumes_per_s = await _rate(args.clients, args.cycles, api_cycle)
                conn = libvirt.open(URI)
                try:
                    raw = Raw(tgtd, work, conn, conn.lookupByName(f"cc-{vm.id}"))
                    raw_times = await _by_hand(raw, args.rounds)

                    async def raw_cycle(n: int) -> None:
                        path = await asyncio.to_thread(raw.create, f"cycle{n}")
                        await asyncio.to_thread(path.unlink)

                    raw_per_s = await _rate(args.clients, args.cycles, raw_cycle)
                finally:
                    conn.close()
    finally:
        tgtd.stop()
        shutil.rmtree(work, ignore_errors=True)
    create_export = [c + a for c, a in zip(api_times["create"], api_times["attach"], strict=True)]
    raw_create_export = [
        c + a for c, a in zip(raw_times["create"], raw_times["attach"], strict=True)
    ]
    figures = {
        "volume_create_export_p50_ms": _p50(create_export),
        "raw_tgtadm_create_export_p50_ms": _p50(raw_create_export),
        "attach_p50_ms": _p50(api_times["attach"]),
        "raw_attach_p50_ms": _p50(raw_times["attach"]),
        "detach_p50_ms": _p50(api_times["detach"]),
        "raw_detach_p50_ms": _p50(raw_times["detach"]),
        "volume_create_p50_ms": _p50(api_times["create"]),
        "volume_delete_p50_ms": _p50(api_times["delete"]),
        "volumes_per_s": volumes_per_s,
        "raw_volumes_per_s": raw_per_s,
    }
    ratios = {
        "create_export": figures["volume_create_export_p50_ms"]
        / figures["raw_tgtadm_create_export_p50_ms"],
        "attach": figures["attach_p50_ms"] / figures["raw_attach_p50_ms"],
        "volumes_per_s": volumes_per_s / raw_per_s,
    }
    return {
        "suite": "storage",
        "rounds": args.rounds,
        "clients": args.clients,
        **figures,
        "detach_ratio": round(figures["detach_p50_ms"] / figures["raw_detach_p50_ms"], 2),
        "goals": {
            "create_export": {
                "ratio": round(ratios["create_export"], 2),
                "goal": f"<= {GOALS['create_export']} x raw",
                "met": ratios["create_export"] <= GOALS["create_export"],
            },
            "attach": {
                "ratio": round(ratios["attach"], 2),
                "goal": f"<= {GOALS['attach']} x raw",
                "met": ratios["attach"] <= GOALS["attach"],
            },
            "volumes_per_s": {
                "ratio": round(ratios["volumes_per_s"], 3),
                "goal": f">= {GOALS['volumes_per_s']} x raw",
                "met": ratios["volumes_per_s"] >= GOALS["volumes_per_s"],
            },
        },
        "failed": 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cycles", type=int, default=4, help="create+delete cycles per client")
    args = parser.parse_args()
    reason = why_not_runnable()
    if reason is not None:
        sys.exit(f"scripts/bench storage: {reason}")
    configure_logging("warning", "json")
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
