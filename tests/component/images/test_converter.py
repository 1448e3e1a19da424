"""The converter: a conversion cancelled mid-way leaves no half file; the semaphore bounds how
many run at once. qemu-img is wrapped by a script that stalls ``convert`` after writing part of
its output, so the conversion is caught in the middle."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from actors.converter import ImageConverter
from actors.journal import TaskWaiters
from cloudcore.config import ImagesSettings
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.store import Store
from cloudcore.store.records import Task, TaskState, Template, TemplateState
from tests.cloud import sqlite_store  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None,
    reason="qemu-img is not installed (scripts/lib.sh installs qemu-utils)",
)

STALLING = """#!/bin/sh
if [ "$1" = convert ]; then
  for last; do :; done
  printf 'half a disk' > "$last"
  printf '    (0.00/100%%)\\r    (40.00/100%%)\\r'
  exec sleep 600
fi
exec qemu-img "$@"
"""


async def available_template(store: Store, library: ImageLibrary, tmp_path: Path) -> Template:
    raw = tmp_path / "src.raw"
    with raw.open("wb") as f:
        f.write(b"\x5a" * 1024 * 1024)
        f.truncate(8 * 1024 * 1024)
    qcow2 = tmp_path / "src.qcow2"
    args = ["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)]
    await asyncio.to_thread(subprocess.run, args, check=True)
    sha = hashlib.sha256(qcow2.read_bytes()).hexdigest()
    await library.repository(None).admit(qcow2, sha)
    return await store.create(
        Template(
            id="tpl-1",
            name="golden",
            disk_format="qcow2",
            checksum=sha,
            formats={"qcow2": sha},
            state=TemplateState.AVAILABLE,
        )
    )


async def test_a_conversion_cancelled_midway_leaves_no_half_file(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    fake = tmp_path / "qemu-img"
    fake.write_text(STALLING)
    fake.chmod(0o755)
    library = ImageLibrary(tmp_path / "images")
    converter = ImageConverter(
        sqlite_store, library, QemuImg(str(fake)), ImagesSettings(), TaskWaiters()
    )
    template = await available_template(sqlite_store, library, tmp_path)
    task = await converter.start(template, "vmdk")
    repo = library.repository(None)

    async def reported() -> bool:
        steps = await sqlite_store.list_steps(task.id)
        return bool(steps) and steps[0].data.get("percent") == 40.0

    async with asyncio.timeout(10):
        while not await reported():  # noqa: ASYNC110 - progress is only in the store
            await asyncio.sleep(0.02)
    assert [p.suffix for p in repo.tmp.iterdir()] == [".vmdk"]  # the half file, in scratch

    await converter.close()
    assert list(repo.tmp.iterdir()) == []
    assert [p.name for p in repo.objects.iterdir()] == [template.checksum]
    ended = await sqlite_store.get(Task, task.id)
    assert ended.state is TaskState.CANCELLED
    after = await sqlite_store.get(Template, template.id)
    assert after.state is TemplateState.AVAILABLE and after.formats == {"qcow2": template.checksum}


async def test_conversions_beyond_the_limit_wait_for_a_slot(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    fake = tmp_path / "qemu-img"
    fake.write_text(STALLING)
    fake.chmod(0o755)
    library = ImageLibrary(tmp_path / "images")
    converter = ImageConverter(
        sqlite_store, library, QemuImg(str(fake)), ImagesSettings(max_conversions=1)
    )
    template = await available_template(sqlite_store, library, tmp_path)
    other = await sqlite_store.create(
        Template(
            id="tpl-2",
            name="other",
            checksum=template.checksum,
            formats=template.formats,
            state=TemplateState.AVAILABLE,
        )
    )
    first = await converter.start(template, "vmdk")
    second = await converter.start(other, "vhdx")

    async def first_running() -> bool:
        steps = await sqlite_store.list_steps(first.id)
        return bool(steps) and steps[0].data.get("percent") == 40.0

    async with asyncio.timeout(10):
        while not await first_running():  # noqa: ASYNC110 - progress is only in the store
            await asyncio.sleep(0.02)
    # The first holds the only slot (it never ends): the second has not begun a step.
    assert await sqlite_store.list_steps(second.id) == []
    assert len(list(library.repository(None).tmp.iterdir())) == 1
    await converter.close()
    for task in (first, second):
        assert (await sqlite_store.get(Task, task.id)).state is TaskState.CANCELLED


async def test_a_conversion_cut_off_by_a_crash_is_failed_and_its_template_freed_at_restart(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    library = ImageLibrary(tmp_path / "images", "node-a")
    template = await available_template(sqlite_store, library, tmp_path)
    converting = await sqlite_store.update(
        Template, template.id, expected_version=template.version, state=TemplateState.CONVERTING
    )
    # What a node killed -9 mid-conversion leaves: its task RUNNING, a half file in its scratch.
    crashed = await sqlite_store.create(
        Task(
            id="task-crashed",
            kind="template.convert",
            subject="template/tpl-1",
            state=TaskState.RUNNING,
            data={"template_id": converting.id, "format": "vmdk", "node": "node-a"},
        )
    )
    elsewhere = await sqlite_store.create(
        Task(
            id="task-elsewhere",
            kind="template.convert",
            subject="template/tpl-9",
            state=TaskState.RUNNING,
            data={"template_id": "tpl-9", "format": "vmdk", "node": "node-b"},
        )
    )
    (library.repository(None).tmp / "half.vmdk").write_bytes(b"half")

    restarted = ImageLibrary(tmp_path / "images", "node-a")
    converter = ImageConverter(sqlite_store, restarted, QemuImg(), ImagesSettings())
    assert list(restarted.repository(None).tmp.iterdir()) == []
    assert await converter.recover() == 1
    failed = await sqlite_store.get(Task, crashed.id)
    assert failed.state is TaskState.FAILED and "interrupted" in (failed.error or "")
    # Another node's conversion is that node's to recover.
    assert (await sqlite_store.get(Task, elsewhere.id)).state is TaskState.RUNNING
    freed = await sqlite_store.get(Template, template.id)
    assert freed.state is TemplateState.AVAILABLE and freed.formats == {"qcow2": template.checksum}
    assert [p.name for p in restarted.repository(None).objects.iterdir()] == [template.checksum]
