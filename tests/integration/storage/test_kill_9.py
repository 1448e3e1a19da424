"""``kill -9`` of ``cloudcore serve`` with 20 attaches in flight on a real tgtd and real QEMU
guests under libvirtd, then a restart on the same store: every task ends by itself, and the
store, tgtd (``tgtadm --op show``) and libvirt (each domain's XML) agree: every volume the store
shows ATTACHED is exported to its VM's host and is a disk of that VM, no other volume is
exported (no dangling export) and no VM has an iSCSI disk the store does not know.

Two running guests take ten volumes each: starting QEMU guests under libvirtd is what costs
(seconds each), while an attach is a hot plug into a running one, so two guests give 20 attaches
in flight as well as twenty would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actors.journal import FINAL
from actors.orchestrator import Orchestrator
from cloudcore.config import default_config_path
from cloudcore.store import Store
from cloudcore.store.records import VM, Task, TaskState, VMSpec, Volume, VolumeState
from storage_drivers.tgt._client import parse_targets
from tests.cloud import cloud_settings
from tests.component.cli.conftest import Lines
from tests.contract.storage.tgtd import Tgtd
from tests.integration.libvirt.conftest import virsh
from tests.integration.orchestrator.test_real_libvirt import _datacenter_on, _forget_vms
from tests.integration.storage.conftest import POOL
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(600)

ATTACHES = 20
TOKEN = "kill-9-test-admin-token-0123456789"


def _config(tmp_path: Path, tgtd: Tgtd) -> Path:
    """conf/default.toml with the test's tgt pool in dc1."""
    pool = (
        f'{{ id = "{POOL}", datacenter = "dc1", driver = "tgt", path = "{tmp_path / "pool"}", '
        f"portal_port = {tgtd.portal_port}, overcommit = 4.0, "
        f'extra = {{ control_port = "{tgtd.control_port}", timeout_s = "10" }} }}'
    )
    text = default_config_path().read_text()
    assert "\npools = []\n" in text
    path = tmp_path / "cloudcore.toml"
    path.write_text(text.replace("\npools = []\n", f"\npools = [{pool}]\n"))
    return path


class _Serve:
    """``cloudcore serve`` as a subprocess; its API's URL read from its log."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudcore.app.cli", "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines = Lines(self.proc.stderr)
        self.url = ""
        while not self.url:
            record = json.loads(self.lines.next(timeout=60))
            if record.get("event") == "api.listening":
                self.url = str(record["url"])

    def close(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.lines.join()
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


@pytest.fixture
def serve(tmp_path: Path, tgtd: Tgtd) -> Iterator[Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCORE_")}
    env |= {
        "CLOUDCORE_CONFIG": str(_config(tmp_path, tgtd)),
        "CLOUDCORE_NODE__DATA_DIR": str(tmp_path),
        "CLOUDCORE_DEMO__ENABLED": "false",
        "CLOUDCORE_API__PORT": "0",
        "CLOUDCORE_ADMIN_TOKEN": TOKEN,
        "CLOUDCORE_LOG__FORMAT": "json",
        "CLOUDCORE_ORCHESTRATOR__SWEEP_INTERVAL": "2",
        "CLOUDCORE_ORCHESTRATOR__WATCHDOG_INTERVAL": "2",
    }
    nodes: list[_Serve] = []

    def start() -> _Serve:
        nodes.append(_Serve(env, tmp_path))
        return nodes[-1]

    try:
        yield start
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                node.close(signal.SIGKILL)


def _exported(tgtd: Tgtd) -> dict[str, list[str]]:
    """Volume id -> the initiators its target lets in, as ``tgtadm --op show`` has them."""
    shown = subprocess.run(
        ["tgtadm", "-C", str(tgtd.control_port), "--lld", "iscsi", "--op", "show",
         "--mode", "target"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return {t.iqn.rsplit(":", 1)[-1]: t.acls for t in parse_targets(shown)}


def _iscsi_disks(vm_id: str) -> set[str]:
    """The serials (volume ids) of the VM's iSCSI disks, in its live XML."""
    xml = virsh("dumpxml", f"cc-{vm_id}").stdout
    disks = re.findall(r"<disk type='network'.*?</disk>", xml, flags=re.DOTALL)
    return {m.group(1) for d in disks if (m := re.search(r"<serial>([^<]+)</serial>", d))}


class _Api:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as reply:
            return reply.status, await reply.json()


@contextlib.asynccontextmanager
async def _api(url: str) -> AsyncIterator[_Api]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield _Api(session, url)


async def _tasks(store: Store, ids: list[str]) -> list[Task]:
    return [await store.get(Task, task_id) for task_id in ids]


async def test_kill_9_during_20_attaches_then_restart_ends_every_task_and_all_agree(
    libvirtd: str, domain_type: str, sqlite_store: Store, tgtd: Tgtd, serve: Any, tmp_path: Path
) -> None:
    settings = cloud_settings(tmp_path)  # the node's own come from its config and environment
    host_id = await _datacenter_on(sqlite_store, settings, libvirtd, domain_type=domain_type)
    node = serve()
    vms: list[VM] = []
    try:
        deploys = [
            await Orchestrator.submit_deploy(
                sqlite_store,
                tenant_id="t1",
                datacenter_id="dc1",
                name=f"iscsi{n}",
                spec=VMSpec(cpus=1, memory_mib=64),
            )
            for n in range(2)
        ]

        async def deployed() -> bool:
            return all(
                t.state in FINAL for t in await _tasks(sqlite_store, [d.id for d in deploys])
            )

        await eventually(deployed, timeout=180, interval=0.2)
        for task in deploys:
            assert (await sqlite_store.get(Task, task.id)).state is TaskState.SUCCEEDED
            vms.append(await sqlite_store.get(VM, task.subject.removeprefix("vm/")))

        async with _api(node.url) as api:
            creates = []
            for n in range(ATTACHES):
                body = {"name": f"v{n}", "datacenter_id": "dc1", "size_gib": 1}
                status, task = await api.call("POST", "/volumes", {**body, "tenant_id": "t1"})
                assert status == 202, task
                creates.append(task)

            async def created() -> bool:
                tasks = await _tasks(sqlite_store, [t["id"] for t in creates])
                return all(t.state in FINAL for t in tasks)

            await eventually(created, timeout=120, interval=0.1)
            volumes = [t["subject"].removeprefix("volume/") for t in creates]
            for volume_id in volumes:
                assert (await sqlite_store.get(Volume, volume_id)).state is VolumeState.AVAILABLE

            replies = await asyncio.gather(
                *(
                    api.call("POST", f"/volumes/{vol}/attach", {"vm_id": vms[n % 2].id})
                    for n, vol in enumerate(volumes)
                )
            )
        assert [status for status, _ in replies] == [202] * ATTACHES, replies
        attaches = [task["id"] for _, task in replies]

        async def some_done() -> bool:
            states = [t.state for t in await _tasks(sqlite_store, attaches)]
            return any(s in FINAL for s in states)

        await eventually(some_done, timeout=120, interval=0.005)
        node.close(signal.SIGKILL)
        at_kill = [t.state for t in await _tasks(sqlite_store, attaches)]
        unfinished = sum(1 for s in at_kill if s not in FINAL)
        print(f"kill -9 with {unfinished} of {ATTACHES} attaches unfinished")

        node = serve()  # the same store, tgtd and libvirtd

        async def all_ended() -> bool:
            return all(t.state in FINAL for t in await _tasks(sqlite_store, attaches))

        await eventually(all_ended, timeout=240, interval=0.2)
        ended = await _tasks(sqlite_store, attaches)
        store_attached: dict[str, str] = {}
        for task, volume_id in zip(ended, volumes, strict=True):
            volume = await sqlite_store.get(Volume, volume_id)
            assert task.state in (TaskState.SUCCEEDED, TaskState.FAILED), task
            if task.state is TaskState.SUCCEEDED:
                assert volume.state is VolumeState.ATTACHED and volume.vm_id is not None, volume
                store_attached[volume_id] = volume.vm_id
            else:
                assert (volume.state, volume.vm_id) == (VolumeState.AVAILABLE, None), volume
            assert volume.task_id is None
        failed = ATTACHES - len(store_attached)
        print(f"after the restart: {len(store_attached)} attached, {failed} failed")

        initiator = f"iqn.2026-12.org.cloudcore.host:{host_id}"
        assert _exported(tgtd) == {v: [initiator] for v in store_attached}  # none dangling
        for vm in vms:  # no attachment the store does not know, none it knows missing
            assert _iscsi_disks(vm.id) == {v for v, on in store_attached.items() if on == vm.id}
        async with _api(node.url) as api:
            assert await api.call("GET", "/storage-pools/drift") == (200, [])
        assert node.close(signal.SIGTERM) == 0
    finally:
        _forget_vms([vm.id for vm in vms])
