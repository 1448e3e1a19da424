"""scripts/bench images: the image library through the API, against the raw tools in the same run.

Prints ONE JSON object. A ``cloudcore serve`` node (embedded SQLite store, the demo datacenter
of simulated libvirt hosts) runs in a process of its own on a scratch data directory; this
process is the client (the CLI's own upload code, ``cloudcore.app.commands.template``).

- ``upload_mib_per_s``: a 1 GiB raw image of dense pseudo-random bytes through
  ``PUT /templates/{id}/image`` (streamed, each 4 MiB block written and hashed at once in two
  threads, fsynced, inspected by qemu-img, renamed into the library), timed from the first
  byte to the reply; the sha256 the client computes first is not counted.
  ``raw_copy_mib_per_s``: ``cp`` of the same file on the same disk, then an fsync of the copy
  (the upload fsyncs too), in the same run.
- ``convert_vmdk_s``: ``POST /templates/{id}/conversions {"format": "vmdk"}`` until its task
  ends (claimed by the datacenter's converter actor: qemu-img convert, qemu-img info of the
  result, its sha256 read while it is fsynced, the rename into the library; no qemu-img compare,
  which is asked for per request) of a 1 GiB sparse raw image with 96 MiB of data (the recipes'
  figure); ``raw_convert_vmdk_s``: ``qemu-img convert -O vmdk`` of the same file, alone.
- ``deploy_from_template_p50_ms``: ``POST /vms`` from a qcow2 template until the deploy task
  ends, one at a time, on the demo hosts (libvirt's test driver: the VM is simulated, its disk
  is a real qcow2 linked clone of the host's cached copy of the template's file, which the first
  deploy on each host makes: ``deploy_max_ms``, ``host_base_copies`` the bases per host after);
  ``raw_linked_clone_ms``: ``qemu-img create -b`` alone.

Goals: upload_mib_per_s >= 0.5 x raw_copy_mib_per_s; convert_vmdk_s <= 1.2 x raw_convert_vmdk_s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).parent))

from _common import emit

from cloudcore.app.client import Client
from cloudcore.app.commands.template import ByteProgress, upload_file

MIB = 1024 * 1024
GIB = 1024 * MIB
GOAL_UPLOAD = 0.5
GOAL_CONVERT = 1.2


def dense_image(path: Path, size: int) -> None:
    block = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(MIB // 32))
    with path.open("wb") as f:
        for n in range(size // MIB):
            f.write(block[n % 32 :] + block[: n % 32])  # no two MiB alike


def sparse_image(path: Path, size: int, data: int) -> None:
    block = hashlib.sha256(b"sparse").digest() * (MIB // 32)
    with path.open("wb") as f:
        for n in range(data // MIB):
            f.seek(n * (size // (data // MIB)))  # data spread over the disk, holes between
            f.write(block)
        f.truncate(size)


def run(*args: str) -> float:
    began = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - began


def raw_copy_seconds(src: Path, dst: Path) -> float:
    began = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - began


class Node:
    """``cloudcore serve`` on a scratch data directory."""

    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCORE_")}
        env |= {
            "CLOUDCORE_NODE__DATA_DIR": str(data_dir),
            "CLOUDCORE_STORE__AUTO_UPGRADE": "true",
            "CLOUDCORE_API__PORT": "0",
            "CLOUDCORE_LOG__FORMAT": "json",
            "CLOUDCORE_LOG__LEVEL": "warning",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudcore.app.cli", "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "CLOUDCORE_LOG__LEVEL": "info"},
            cwd=data_dir,
        )
        assert self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stderr:
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "api.listening":
                self.url = str(record["url"])
                break
        if not self.url:
            raise RuntimeError("cloudcore serve did not start")
        # Drain the node's log so its pipe never fills.
        self._drain = asyncio.get_event_loop().run_in_executor(None, self._read_rest)
        self.token = (data_dir / "admin-token").read_text().strip()

    def _read_rest(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


class _Quiet(ByteProgress):
    def update(self, sent: int) -> None:
        pass

    def done(self, state: str) -> None:
        pass


async def upload(client: Client, name: str, path: Path) -> tuple[dict[str, Any], float]:
    made = await client.call("POST", "/templates", body={"name": name, "tenant_id": None})
    size = (await asyncio.to_thread(path.stat)).st_size
    digest = await asyncio.to_thread(_sha256, path)
    began = time.perf_counter()
    template = await upload_file(client, made["id"], path, size, digest, _Quiet(name, size))
    seconds = time.perf_counter() - began
    if template["state"] != "AVAILABLE":
        raise RuntimeError(f"the upload of {name} ended {template['state']}")
    return template, seconds


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


async def wait_task(client: Client, task_id: str) -> dict[str, Any]:
    while True:
        task: dict[str, Any] = await client.call("GET", f"/tasks/{task_id}")
        if task["state"] in ("SUCCEEDED", "FAILED", "COMPENSATED", "CANCELLED"):
            if task["state"] != "SUCCEEDED":
                raise RuntimeError(f"task {task_id} ended {task['state']}: {task.get('error')}")
            return task
        await asyncio.sleep(0.01)


async def convert(client: Client, template_id: str) -> tuple[float, dict[str, float]]:
    """The seconds from the request to the task's end, and each step's seconds."""
    began = time.perf_counter()
    task = await client.call(
        "POST", f"/templates/{template_id}/conversions", body={"format": "vmdk"}
    )
    done = await wait_task(client, task["id"])
    seconds = time.perf_counter() - began
    steps = {
        str(step["name"]): round(_stamp(step["updated_at"]) - _stamp(step["created_at"]), 3)
        for step in done.get("steps") or []
    }
    return seconds, steps


def _stamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def deploys(client: Client, template_id: str, count: int) -> list[float]:
    times: list[float] = []
    for n in range(count):
        body = {
            "name": f"bench-{n}",
            "datacenter_id": "dc1",
            "cpus": 1,
            "memory_mib": 128,
            "disk_gib": 1,
            "template_id": template_id,
            "tenant_id": "demo",
        }
        began = time.perf_counter()
        task = await client.call("POST", "/vms", body=body)
        await wait_task(client, task["id"])
        times.append((time.perf_counter() - began) * 1000)
    return times


async def main(args: argparse.Namespace) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="cc-bench-images-", dir=args.dir))
    try:
        return await measure(scratch, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def measure(scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    size = args.upload_mib * MIB
    dense, sparse = scratch / "dense.raw", scratch / "sparse.raw"
    await asyncio.to_thread(dense_image, dense, size)
    await asyncio.to_thread(sparse_image, sparse, GIB, 96 * MIB)
    small = scratch / "small.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(small), "256M")

    copy_s = raw_copy_seconds(dense, scratch / "copy.raw")
    (scratch / "copy.raw").unlink()
    raw_convert_s = statistics.median(
        run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(sparse), str(scratch / "r.vmdk"))
        for _ in range(3)
    )
    raw_clone_ms = 1000 * statistics.median(
        run(
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(small), "-F", "qcow2",
            str(scratch / f"clone{n}.qcow2"), str(GIB),
        )
        for n in range(10)
    )  # fmt: skip

    data_dir = scratch / "node"
    data_dir.mkdir()
    node = Node(data_dir)
    try:
        async with Client(node.url, node.token) as client:
            _, upload_s = await upload(client, "dense", dense)
            sparse_t, _ = await upload(client, "sparse", sparse)
            convert_s, convert_steps = await convert(client, sparse_t["id"])
            small_t, _ = await upload(client, "small", small)
            deploy_ms = await deploys(client, small_t["id"], args.deploys)
    finally:
        node.stop()
    hosts = data_dir / "images.hosts"  # each host's cache: one base copy per host
    bases = {h.name: len(list((h / "bases").iterdir())) for h in sorted(hosts.iterdir())}

    upload_rate = size / MIB / upload_s
    copy_rate = size / MIB / copy_s
    return {
        "suite": "images",
        "image_mib": args.upload_mib,
        "upload_mib_per_s": round(upload_rate, 1),
        "raw_copy_mib_per_s": round(copy_rate, 1),
        "upload_ratio": round(upload_rate / copy_rate, 3),
        "upload_goal": f"upload_mib_per_s >= {GOAL_UPLOAD} x raw_copy_mib_per_s",
        "upload_goal_met": upload_rate >= GOAL_UPLOAD * copy_rate,
        "convert_vmdk_s": round(convert_s, 3),
        "raw_convert_vmdk_s": round(raw_convert_s, 3),
        "convert_ratio": round(convert_s / raw_convert_s, 3),
        "convert_goal": f"convert_vmdk_s <= {GOAL_CONVERT} x raw_convert_vmdk_s",
        "convert_goal_met": convert_s <= GOAL_CONVERT * raw_convert_s,
        "convert_image": "1 GiB sparse raw, 96 MiB of data",
        "convert_steps_s": convert_steps,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "deploy_from_template_p50_ms": round(statistics.median(deploy_ms), 1),
        "deploys": len(deploy_ms),
        "deploy_max_ms": round(max(deploy_ms), 1),
        "host_base_copies": bases,
        "raw_linked_clone_ms": round(raw_clone_ms, 1),
        "deploy_note": "demo hosts: libvirt's test driver; the base copy and linked clone are real",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-mib", type=int, default=1024, help="size of the upload image")
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--dir", default=None, help="scratch directory (default: the temp dir)")
    emit(asyncio.run(main(parser.parse_args())))
