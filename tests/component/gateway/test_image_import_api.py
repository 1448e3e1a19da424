"""Imports from a URL through the API, against a loopback aiohttp server that serves real
qemu-img images: ranges honoured or not, connections cut mid-stream, wrong checksums, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from cloudcore.config import ImagesSettings
from cloudcore.store import Store
from cloudcore.store.records import StepState, Task, TaskState, Template
from tests.cloud import sqlite_store  # noqa: F401 - the fixture
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api
from tests.component.gateway.test_images_api import (
    MIB,
    leftovers,
    library_files,
    new_template,
    qcow2_image,
    qemu_img,
    raw_image,
    sha,
)

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("qemu-img") is None,
    reason="qemu-img is not installed (scripts/lib.sh installs qemu-utils)",
)


@dataclass
class Origin:
    """A loopback image server. ``cuts``: how many of the next requests are cut after ``cut_at``
    bytes of their body; ``ranges``: whether Range requests are honoured (206)."""

    image: bytes = b""
    cuts: int = 0
    cut_at: int = 0
    ranges: bool = True
    seen: list[str | None] = field(default_factory=list)  # the Range header of each request
    base: str = ""

    async def serve(self, request: web.Request) -> web.StreamResponse:
        asked = request.headers.get("Range")
        self.seen.append(asked)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and self.ranges else 0
        body = self.image[start:]
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = len(body)
        if start:
            response.headers["Content-Range"] = (
                f"bytes {start}-{len(self.image) - 1}/{len(self.image)}"
            )
        await response.prepare(request)
        if self.cuts:
            self.cuts -= 1
            await response.write(body[: self.cut_at])
            assert request.transport is not None
            request.transport.close()  # mid-stream: the client sees a short body
            return response
        await response.write(body)
        return response


async def missing(_request: web.Request) -> web.Response:
    return web.Response(status=404)


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    server = Origin()
    app = web.Application()
    app.router.add_get("/disk.img", server.serve)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def start_import(api: ApiClient, tid: str, body: dict[str, object]) -> Task:
    r = await api.call("POST", f"/templates/{tid}/import", "alice", body)
    assert r.status == 202, r.body
    task: Task = await api.wait_task(r.body["id"])
    return task


async def test_an_import_streams_the_image_into_the_library_with_progress(
    api: ApiClient, origin: Origin, tmp_path: Path
) -> None:
    origin.image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    url = f"{origin.base}/disk.img"
    task = await start_import(
        api, tid, {"url": url, "sha256": sha(origin.image), "size": len(origin.image)}
    )
    assert task.state is TaskState.SUCCEEDED, task.error
    steps = await api.store.list_steps(task.id)
    assert [(s.name, s.state) for s in steps] == [
        ("download", StepState.DONE),
        ("accept", StepState.DONE),
    ]
    assert steps[0].data["percent"] == 100.0
    t = (await api.call("GET", f"/templates/{tid}", "alice")).body
    digest = sha(origin.image)
    assert (t["state"], t["disk_format"], t["checksum"]) == ("AVAILABLE", "qcow2", digest)
    assert t["source"] == url and t["virtual_size"] == 16 * MIB
    assert library_files(api) == [sha(origin.image)] and leftovers(api) == []


async def test_a_connection_cut_mid_stream_resumes_with_a_range_request(
    api: ApiClient, origin: Origin, tmp_path: Path
) -> None:
    origin.image = raw_image(tmp_path / "d.raw", size_mib=4, data_mib=3).read_bytes()
    origin.cuts, origin.cut_at = 2, 1536 * 1024
    tid = await new_template(api)
    body = {"url": f"{origin.base}/disk.img", "sha256": sha(origin.image)}
    task = await start_import(api, tid, body)
    assert task.state is TaskState.SUCCEEDED, task.error
    # The first request whole, then each resumes where the bytes fsynced so far end.
    assert origin.seen[0] is None and len(origin.seen) == 3
    offsets = [int(h.removeprefix("bytes=").rstrip("-")) for h in origin.seen[1:] if h]
    assert offsets == sorted(offsets) and all(0 < o <= 2 * origin.cut_at for o in offsets)
    assert library_files(api) == [sha(origin.image)]


async def test_a_server_without_ranges_is_read_again_from_the_start(
    api: ApiClient, origin: Origin, tmp_path: Path
) -> None:
    origin.image = raw_image(tmp_path / "d.raw", size_mib=2, data_mib=2).read_bytes()
    origin.cuts, origin.cut_at, origin.ranges = 1, MIB, False
    tid = await new_template(api)
    task = await start_import(api, tid, {"url": f"{origin.base}/disk.img"})
    assert task.state is TaskState.SUCCEEDED, task.error
    t = await api.store.get(Template, tid)
    assert t.checksum == sha(origin.image)  # not the first MiB twice


async def test_a_wrong_checksum_fails_the_import_and_leaves_nothing(
    api: ApiClient, origin: Origin, tmp_path: Path
) -> None:
    origin.image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    task = await start_import(api, tid, {"url": f"{origin.base}/disk.img", "sha256": "0" * 64})
    assert task.state is TaskState.FAILED and task.error and "sha256" in task.error
    t = await api.store.get(Template, tid)
    assert t.state == "ERROR" and t.error and "sha256" in t.error
    assert library_files(api) == [] and leftovers(api) == []


async def test_a_size_other_than_the_declared_one_is_refused_before_the_body(
    api: ApiClient, origin: Origin, tmp_path: Path
) -> None:
    origin.image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    task = await start_import(
        api, tid, {"url": f"{origin.base}/disk.img", "size": len(origin.image) + 1}
    )
    assert task.state is TaskState.FAILED and task.error and "size" in task.error
    assert (await api.store.get(Template, tid)).state == "ERROR"
    assert leftovers(api) == []


async def test_an_image_with_a_backing_file_is_refused_as_an_upload_is(
    api: ApiClient, origin: Origin, tmp_path: Path
) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(evil))
    origin.image = evil.read_bytes()
    tid = await new_template(api)
    task = await start_import(api, tid, {"url": f"{origin.base}/disk.img"})
    assert task.state is TaskState.FAILED and task.error and "backing file" in task.error
    assert (await api.store.get(Template, tid)).state == "ERROR"
    assert library_files(api) == [] and leftovers(api) == []


async def test_a_missing_url_fails_the_import_naming_the_status(
    api: ApiClient, origin: Origin
) -> None:
    tid = await new_template(api)
    task = await start_import(api, tid, {"url": f"{origin.base}/missing"})
    assert task.state is TaskState.FAILED and task.error and "404" in task.error
    assert (await api.store.get(Template, tid)).state == "ERROR"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://127.0.0.1/disk.img", "scheme 'ftp'"),
        ("http://user:secret@127.0.0.1/disk.img", "credentials"),
        ("http:///disk.img", "host"),
    ],
)
async def test_urls_other_than_http_are_refused_naming_the_field(
    api: ApiClient, url: str, reason: str
) -> None:
    tid = await new_template(api)
    r = await api.call("POST", f"/templates/{tid}/import", "alice", {"url": url})
    assert r.status == 422, r.body
    assert r.body["error"]["details"]["field"] == "url"
    assert reason in r.body["error"]["message"]
    assert "secret" not in r.body["error"]["message"]
    assert (await api.store.get(Template, tid)).state == "NEW"


async def test_a_declared_size_beyond_the_maximum_is_refused_at_once(api: ApiClient) -> None:
    tid = await new_template(api)
    too_big = api.settings.images.max_upload_bytes + 1
    r = await api.call(
        "POST", f"/templates/{tid}/import", "alice", {"url": "http://127.0.0.1/x", "size": too_big}
    )
    assert r.status == 413 and r.error_code == "image_too_large"


async def test_running_out_of_attempts_keeps_the_bytes_and_a_new_import_resumes(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    origin: Origin,
    tmp_path: Path,
) -> None:
    base = api_settings(tmp_path)
    settings = msgspec.structs.replace(base, images=ImagesSettings(import_attempts=2))
    async with serve_api(sqlite_store, settings) as api:
        origin.image = raw_image(tmp_path / "d.raw", size_mib=4, data_mib=4).read_bytes()
        origin.cuts, origin.cut_at = 2, MIB
        tid = await new_template(api)
        body = {"url": f"{origin.base}/disk.img", "sha256": sha(origin.image)}
        failed = await start_import(api, tid, body)
        assert failed.state is TaskState.FAILED and failed.error
        assert "dropped 2 times" in failed.error
        t = await api.store.get(Template, tid)
        assert t.state == "UPLOADING" and 0 < t.uploaded_bytes <= 2 * MIB
        assert library_files(api) == []

        resumed = await start_import(api, tid, body)
        assert resumed.state is TaskState.SUCCEEDED, resumed.error
        assert origin.seen[-1] == f"bytes={t.uploaded_bytes}-"
        assert library_files(api) == [sha(origin.image)] and leftovers(api) == []


async def test_an_import_while_the_template_is_uploading_by_request_is_refused(
    api: ApiClient,
) -> None:
    tid = await new_template(api)
    gateway = api.gateway
    assert gateway is not None and gateway.images is not None
    gateway.images.uploading.add(tid)  # an upload request in progress on this node
    try:
        r = await api.call(
            "POST", f"/templates/{tid}/import", "alice", {"url": "http://127.0.0.1/x"}
        )
        assert r.status == 409, r.body
    finally:
        gateway.images.uploading.discard(tid)


async def test_another_tenants_user_cannot_import_into_a_template(api: ApiClient) -> None:
    tid = await new_template(api)
    r = await api.call("POST", f"/templates/{tid}/import", "bob", {"url": "http://127.0.0.1/x"})
    assert r.status == 404, r.body
