"""The image library through the API: streamed, resumable uploads checked by qemu-img, content
addressing, and conversions as journaled tasks. Real (small, sparse) images made by qemu-img."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from multidict import CIMultiDict

from cloudcore.store import Store
from cloudcore.store.records import StepState, Task, TaskState, Template
from tests.cloud import sqlite_store  # noqa: F401 - the fixture
from tests.component.gateway.conftest import ApiClient, Reply, api_settings, serve_api
from tests.component.images.test_converter import STALLING
from tests.waiting import eventually

MIB = 1024 * 1024
pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "qemu-img"], capture_output=True).returncode != 0,
    reason="qemu-img is not installed (scripts/lib.sh installs qemu-utils)",
)


def qemu_img(*args: str) -> None:
    for _ in range(5):
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
        # A LUKS header times its key derivation by the CPU time it used: on a loaded machine
        # qemu-img may see none and give up ("Unable to get accurate CPU usage"); make it again.
        if done.returncode == 0 or "accurate CPU usage" not in done.stderr:
            break
    done.check_returncode()


def raw_image(path: Path, size_mib: int = 16, data_mib: int = 2, seed: int = 1) -> Path:
    """A sparse raw image with ``data_mib`` of pseudo-random bytes at its start."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    with path.open("wb") as f:
        for _ in range(data_mib):
            f.write(block)
        f.truncate(size_mib * MIB)
    return path


def qcow2_image(tmp_path: Path, name: str = "disk.qcow2", seed: int = 1) -> Path:
    raw = raw_image(tmp_path / f"{name}.src.raw", seed=seed)
    out = tmp_path / name
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(out))
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def new_template(api: ApiClient, who: str = "alice", **fields: Any) -> str:
    r = await api.call("POST", "/templates", who, {"name": "golden", **fields})
    assert r.status == 201, r.body
    assert r.body["state"] == "NEW"
    return str(r.body["id"])


async def put_image(
    api: ApiClient,
    template_id: str,
    body: bytes,
    *,
    size: int,
    digest: str,
    who: str = "alice",
    content_range: str | None = None,
) -> Reply:
    headers = {
        "Content-Type": "application/octet-stream",
        "Authorization": f"Bearer {api.tokens[who]}",
    }
    if content_range is not None:
        headers["Content-Range"] = content_range
    url = f"{api.base}/templates/{template_id}/image?size={size}&sha256={digest}"
    async with api.session.put(url, data=io.BytesIO(body), headers=headers) as r:
        return Reply(r.status, msgspec.json.decode(await r.read()), CIMultiDict(r.headers))


def repo(api: ApiClient, name: str = "_shared") -> Path:
    return Path(api.settings.node.data_dir) / "images" / name


def library_files(api: ApiClient) -> list[str]:
    return sorted(p.name for p in (repo(api) / "objects").iterdir())


def leftovers(api: ApiClient) -> list[str]:
    scratch = repo(api) / "tmp" / api.settings.node.id
    return sorted(p.name for d in (repo(api) / "uploads", scratch) for p in d.iterdir())


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait for a condition the server reaches on its own (a dropped connection handled)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - the server signals nothing to await
            await asyncio.sleep(0.02)


async def test_an_upload_in_chunks_resumes_at_the_offset_the_server_holds(
    api: ApiClient, tmp_path: Path
) -> None:
    image = qcow2_image(tmp_path).read_bytes()
    size, digest = len(image), sha(image)
    tid = await new_template(api)
    cut = size // 2

    first = await put_image(
        api, tid, image[:cut], size=size, digest=digest, content_range=f"bytes 0-{cut - 1}/{size}"
    )
    assert first.status == 200, first.body
    assert (first.body["state"], first.body["uploaded_bytes"]) == ("UPLOADING", cut)
    assert library_files(api) == []

    wrong = await put_image(
        api,
        tid,
        image[cut + 1 :],
        size=size,
        digest=digest,
        content_range=f"bytes {cut + 1}-{size - 1}/{size}",
    )
    assert wrong.status == 416
    assert wrong.body["error"]["details"]["offset"] == cut

    rest = await put_image(
        api,
        tid,
        image[cut:],
        size=size,
        digest=digest,
        content_range=f"bytes {cut}-{size - 1}/{size}",
    )
    assert rest.status == 200, rest.body
    t = rest.body
    assert (t["state"], t["disk_format"], t["checksum"]) == ("AVAILABLE", "qcow2", digest)
    assert t["virtual_size"] == 16 * MIB and t["formats"] == {"qcow2": digest}
    assert library_files(api) == [digest]
    assert (repo(api) / "objects" / digest).read_bytes() == image
    assert leftovers(api) == []


async def test_a_body_larger_than_the_json_limit_streams_through(
    api: ApiClient, tmp_path: Path
) -> None:
    image = raw_image(tmp_path / "big.raw", size_mib=4, data_mib=4).read_bytes()
    assert len(image) > api.settings.api.max_body_bytes
    tid = await new_template(api)
    r = await put_image(api, tid, image, size=len(image), digest=sha(image))
    assert r.status == 200, r.body
    assert r.body["state"] == "AVAILABLE"


async def test_a_wrong_checksum_leaves_the_template_in_error_and_no_file(
    api: ApiClient, tmp_path: Path
) -> None:
    image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    r = await put_image(api, tid, image, size=len(image), digest="0" * 64)
    assert r.status == 422 and r.error_code == "image_rejected"
    assert "sha256" in r.body["error"]["message"]
    t = (await api.call("GET", f"/templates/{tid}", "alice")).body
    assert t["state"] == "ERROR" and "sha256" in t["error"]
    assert library_files(api) == [] and leftovers(api) == []
    # ERROR allows a new upload, which succeeds.
    again = await put_image(api, tid, image, size=len(image), digest=sha(image))
    assert again.status == 200 and again.body["state"] == "AVAILABLE"


async def test_a_raw_file_named_qcow2_is_stored_as_raw(api: ApiClient, tmp_path: Path) -> None:
    image = raw_image(tmp_path / "disguised.qcow2").read_bytes()
    r0 = await api.call(
        "POST", "/templates", "alice", {"name": "disguised.qcow2", "disk_format": "qcow2"}
    )
    r = await put_image(api, r0.body["id"], image, size=len(image), digest=sha(image))
    assert r.status == 200, r.body
    assert r.body["disk_format"] == "raw"
    assert r.body["formats"] == {"raw": sha(image)}


async def test_a_qcow2_with_a_backing_file_outside_the_library_is_refused(
    api: ApiClient, tmp_path: Path
) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(evil))
    image = evil.read_bytes()
    tid = await new_template(api)
    r = await put_image(api, tid, image, size=len(image), digest=sha(image))
    assert r.status == 422 and r.error_code == "image_rejected"
    assert "backing file" in r.body["error"]["message"]
    assert "/etc/passwd" in r.body["error"]["message"]
    t = (await api.call("GET", f"/templates/{tid}", "alice")).body
    assert t["state"] == "ERROR"
    assert library_files(api) == [] and leftovers(api) == []


async def test_a_file_that_is_no_image_format_the_library_takes_is_refused(
    api: ApiClient, tmp_path: Path
) -> None:
    luks = tmp_path / "x.luks"
    qemu_img(
        "create",
        "-q",
        "--object",
        "secret,id=s0,data=pw",
        "-f",
        "luks",
        "-o",
        "key-secret=s0,iter-time=10",
        str(luks),
        "1M",
    )
    image = luks.read_bytes()
    tid = await new_template(api)
    r = await put_image(api, tid, image, size=len(image), digest=sha(image))
    assert r.status == 422 and "luks" in r.body["error"]["message"]
    assert library_files(api) == []


async def test_the_same_image_uploaded_twice_is_stored_once(api: ApiClient, tmp_path: Path) -> None:
    image = qcow2_image(tmp_path).read_bytes()
    ids = [await new_template(api, "alice"), await new_template(api, "admin", tenant_id=None)]
    for tid, who in zip(ids, ("alice", "admin"), strict=True):
        r = await put_image(api, tid, image, size=len(image), digest=sha(image), who=who)
        assert r.status == 200, r.body
    assert library_files(api) == [sha(image)]
    cap = await api.call("GET", "/image-repositories/_shared", "operator")
    assert cap.status == 200, cap.body
    assert cap.body["images"] == 1
    assert 0 < cap.body["library_bytes"] <= cap.body["total_bytes"]
    assert (await api.call("GET", "/image-repositories/_shared", "alice")).status == 403
    # Deleting one keeps the file the other still uses; deleting both removes it.
    assert (await api.call("DELETE", f"/templates/{ids[0]}", "alice")).status == 204
    assert library_files(api) == [sha(image)]
    assert (await api.call("DELETE", f"/templates/{ids[1]}", "admin")).status == 204
    assert library_files(api) == []


async def test_an_image_beyond_the_configured_maximum_is_refused_before_any_byte(
    api: ApiClient,
) -> None:
    tid = await new_template(api)
    too_big = api.settings.images.max_upload_bytes + 1
    r = await put_image(api, tid, b"", size=too_big, digest="0" * 64)
    assert r.status == 413 and r.error_code == "image_too_large"
    t = (await api.call("GET", f"/templates/{tid}", "alice")).body
    assert t["state"] == "NEW"


async def test_a_dropped_connection_leaves_the_template_uploading_and_resumable(
    api: ApiClient, tmp_path: Path
) -> None:
    image = qcow2_image(tmp_path).read_bytes()
    size, digest = len(image), sha(image)
    tid = await new_template(api)
    host, port = api.base.split("//")[1].split("/")[0].split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PUT /api/v1/templates/{tid}/image?size={size}&sha256={digest} HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {api.tokens['alice']}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    )
    sent = 300_000
    writer.write(head.encode() + image[:sent])
    await writer.drain()
    gateway = api.gateway
    assert gateway is not None and gateway.images is not None
    uploading = gateway.images.uploading

    async def started() -> bool:
        return tid in uploading

    async def ended() -> bool:
        return tid not in uploading

    await until(started)
    writer.close()
    await until(ended)
    t = await api.store.get(Template, tid)
    held = t.uploaded_bytes
    assert t.state == "UPLOADING" and held <= sent  # what was read before the drop
    assert (repo(api) / "uploads" / f"{tid}.part").stat().st_size == held
    assert library_files(api) == []
    r = await put_image(
        api,
        tid,
        image[held:],
        size=size,
        digest=digest,
        content_range=f"bytes {held}-{size - 1}/{size}",
    )
    assert r.status == 200, r.body
    assert r.body["state"] == "AVAILABLE" and library_files(api) == [digest]


@pytest.mark.parametrize("fmt", ["raw", "vmdk", "vhdx", "vpc", "vdi"])
async def test_a_conversion_is_a_task_with_progress_and_a_compared_result(
    api: ApiClient, tmp_path: Path, fmt: str
) -> None:
    image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    assert (await put_image(api, tid, image, size=len(image), digest=sha(image))).status == 200

    r = await api.call(
        "POST", f"/templates/{tid}/conversions", "alice", {"format": fmt, "compare": True}
    )
    assert r.status == 202, r.body
    task: Task = await api.wait_task(r.body["id"])
    assert task.state is TaskState.SUCCEEDED, task.error
    steps = await api.store.list_steps(task.id)
    assert [(s.name, s.state) for s in steps] == [
        ("convert", StepState.DONE),
        ("compare", StepState.DONE),
        ("store", StepState.DONE),
    ]
    assert steps[0].data["percent"] == 100.0  # qemu-img -p, parsed into the step

    t = (await api.call("GET", f"/templates/{tid}", "alice")).body
    assert t["state"] == "AVAILABLE"
    assert set(t["formats"]) == {"qcow2", fmt}
    converted = repo(api) / "objects" / t["formats"][fmt]
    assert hashlib.sha256(converted.read_bytes()).hexdigest() == t["formats"][fmt]
    source = repo(api) / "objects" / t["checksum"]
    qemu_img("compare", "-f", "qcow2", "-F", fmt, str(source), str(converted))
    assert leftovers(api) == []

    again = await api.call("POST", f"/templates/{tid}/conversions", "alice", {"format": fmt})
    assert again.status == 409


async def test_a_conversion_not_asked_to_compare_checks_format_and_size_only(
    api: ApiClient, tmp_path: Path
) -> None:
    image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    assert (await put_image(api, tid, image, size=len(image), digest=sha(image))).status == 200
    r = await api.call("POST", f"/templates/{tid}/conversions", "alice", {"format": "vmdk"})
    task: Task = await api.wait_task(r.body["id"])
    assert task.state is TaskState.SUCCEEDED, task.error
    steps = await api.store.list_steps(task.id)
    assert [s.name for s in steps] == ["convert", "store"]
    t = (await api.call("GET", f"/templates/{tid}", "alice")).body
    converted = repo(api) / "objects" / t["formats"]["vmdk"]
    assert hashlib.sha256(converted.read_bytes()).hexdigest() == t["formats"]["vmdk"]
    source = repo(api) / "objects" / t["checksum"]
    qemu_img("compare", "-f", "qcow2", "-F", "vmdk", str(source), str(converted))


async def test_an_operator_aborts_a_conversion_midway_and_no_half_file_is_left(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    stalling = tmp_path / "qemu-img"
    stalling.write_text(STALLING)
    stalling.chmod(0o755)
    settings = api_settings(tmp_path)
    images = msgspec.structs.replace(settings.images, qemu_img=str(stalling))
    async with serve_api(sqlite_store, msgspec.structs.replace(settings, images=images)) as api:
        image = qcow2_image(tmp_path).read_bytes()
        tid = await new_template(api)
        assert (await put_image(api, tid, image, size=len(image), digest=sha(image))).status == 200
        r = await api.call("POST", f"/templates/{tid}/conversions", "alice", {"format": "vdi"})
        task_id = r.body["id"]

        async def at_40_percent() -> bool:
            steps = await api.store.list_steps(task_id)
            return bool(steps) and steps[-1].data.get("percent") == 40.0

        await eventually(at_40_percent, timeout=10)
        assert leftovers(api) != []  # the half file, in scratch
        assert (await api.call("POST", f"/tasks/{task_id}/abort", "alice", {})).status == 403
        aborted = await api.call("POST", f"/tasks/{task_id}/abort", "admin", {})
        assert aborted.status == 202, aborted.body
        assert aborted.body["state"] == "CANCELLED"
        assert leftovers(api) == []
        t = (await api.call("GET", f"/templates/{tid}", "alice")).body
        assert t["state"] == "AVAILABLE" and set(t["formats"]) == {"qcow2"}
        again = await api.call("POST", f"/tasks/{task_id}/abort", "admin", {})
        assert again.status == 409


async def test_a_template_without_an_image_cannot_be_converted(api: ApiClient) -> None:
    tid = await new_template(api)
    r = await api.call("POST", f"/templates/{tid}/conversions", "alice", {"format": "vmdk"})
    assert r.status == 409 and r.error_code == "illegal_transition"
    assert "it is NEW" in r.body["error"]["message"]


async def test_a_template_whose_file_a_vm_clone_uses_cannot_be_deleted(
    api: ApiClient, tmp_path: Path
) -> None:
    image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    assert (await put_image(api, tid, image, size=len(image), digest=sha(image))).status == 200
    gateway = api.gateway
    assert gateway is not None and gateway.images is not None
    library = gateway.images
    cache = library.host_cache("h1")  # host h1's copy of the file, and a clone on it there
    source = library.repository(None).object_path(sha(image))
    async with cache.base(sha(image), source, len(image)) as base:
        clone = cache.clone_path(sha(image), "vm-0123")
        clone.parent.mkdir(parents=True)
        clone.write_bytes(b"a clone")
    idle = library.host_cache("h2")  # h2 holds a copy no clone uses
    async with idle.base(sha(image), source, len(image)):
        pass
    r = await api.call("DELETE", f"/templates/{tid}", "alice")
    assert r.status == 409 and "in use by VMs vm-0123" in r.body["error"]["message"]
    assert library_files(api) == [sha(image)] and base.exists()
    clone.unlink()
    assert (await api.call("DELETE", f"/templates/{tid}", "alice")).status == 204
    assert library_files(api) == []
    # Every host's copy goes with the template.
    assert not base.exists() and not idle.base_path(sha(image)).exists()
