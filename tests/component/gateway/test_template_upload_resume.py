"""The CLI's upload (``cloudcore.app.commands.template.upload_file``) through a TCP proxy that
cuts its first connection part-way through the body: the upload resumes from the byte the server
holds (``Content-Range``) and the image arrives whole."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudcore.app.client import Client
from cloudcore.app.commands.template import ByteProgress, upload_file
from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_images_api import library_files, new_template, raw_image

MIB = 1024 * 1024


class CuttingProxy:
    """Forwards loopback connections to the API; the first is cut after ``cut_at`` bytes from
    the client."""

    def __init__(self, upstream: tuple[str, int], cut_at: int) -> None:
        self.upstream, self.cut_at = upstream, cut_at
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        limit = self.cut_at if self.connections == 1 else None
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        back = asyncio.ensure_future(self._pipe(up_reader, writer, None))
        await self._pipe(reader, up_writer, limit)
        if limit is not None:
            back.cancel()
            for w in (writer, up_writer):
                w.transport.abort()
            return
        await back

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int | None
    ) -> None:
        sent = 0
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if limit is not None and sent + len(data) >= limit:
                    writer.write(data[: limit - sent])
                    await writer.drain()
                    return
                writer.write(data)
                await writer.drain()
                sent += len(data)
            writer.close()


@pytest.fixture
async def proxy(api: ApiClient) -> AsyncIterator[CuttingProxy]:
    host, port = api.base.split("//")[1].split("/")[0].split(":")
    cutting = CuttingProxy((host, int(port)), cut_at=1536 * 1024)
    server = await asyncio.start_server(cutting.handle, "127.0.0.1", 0)
    cutting.port = server.sockets[0].getsockname()[1]
    async with server:
        yield cutting


async def test_an_upload_cut_part_way_resumes_and_arrives_whole(
    api: ApiClient, proxy: CuttingProxy, tmp_path: Path
) -> None:
    image = raw_image(tmp_path / "d.raw", size_mib=4, data_mib=4)
    data = image.read_bytes()
    tid = await new_template(api)
    notes = io.StringIO()
    bar = ByteProgress("upload", len(data), out=notes)
    async with Client(f"http://127.0.0.1:{proxy.port}/api/v1", api.tokens["alice"]) as client:
        template = await upload_file(
            client, tid, image, len(data), hashlib.sha256(data).hexdigest(), bar
        )
    assert template["state"] == "AVAILABLE", template
    assert proxy.connections >= 2  # the cut PUT; then the rest (keep-alive may share one)
    assert "resuming at byte" in notes.getvalue()
    resumed_at = int(notes.getvalue().split("resuming at byte ")[1].split()[0])
    assert 0 < resumed_at < len(data)
    assert library_files(api) == [hashlib.sha256(data).hexdigest()]
