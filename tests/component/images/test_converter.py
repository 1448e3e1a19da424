"""The converter actor of a datacenter: a conversion cancelled mid-way leaves no half file; at most
``images.max_conversions`` run at once, the others waiting PENDING; a node stopped in the middle
of a conversion (its actor system stopped, the task left RUNNING and the half file in scratch,
as ``kill -9`` leaves them) has it started again by the next converter, which removes the half
file first. qemu-img is wrapped by a script that stalls ``convert`` after writing part of its
output, so the conversion is caught in the middle."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from actors.conversion import CONVERT, Convert, free_orphans, request_conversion
from actors.converter import CancelConversion, ConverterActor
from actors.services import Services
from actors.template_disks import TemplateDisks
from cloudcore.config import ImagesSettings, RuntimeSettings
from cloudcore.events.local import LocalEventBus
from cloudcore.images import ImageLibrary, QemuImg
from cloudcore.runtime import ActorRef, ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import StepState, Task, TaskState, Template, TemplateState
from tests.cloud import sqlite_store  # noqa: F401 - the fixture
from tests.waiting import eventually, never

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


def stalling_qemu(tmp_path: Path) -> QemuImg:
    fake = tmp_path / "qemu-img"
    fake.write_text(STALLING)
    fake.chmod(0o755)
    return QemuImg(str(fake))


@asynccontextmanager
async def converter(
    store: Store, library: ImageLibrary, qemu: QemuImg, settings: ImagesSettings
) -> AsyncIterator[ActorRef[object]]:
    """The converter of datacenter dc1, on its own actor system (stopped on the way out)."""
    system = ActorSystem("test-node", RuntimeSettings())
    services = Services(store, LocalEventBus(), disks=TemplateDisks(store, library, qemu, settings))
    try:
        yield system.spawn(ConverterActor, services, "dc1", 0.05, name="converter")
    finally:
        await system.shutdown()


async def available_template(
    store: Store, library: ImageLibrary, tmp_path: Path, template_id: str = "tpl-1"
) -> Template:
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
            id=template_id,
            name=template_id,
            disk_format="qcow2",
            checksum=sha,
            formats={"qcow2": sha},
            state=TemplateState.AVAILABLE,
        )
    )


async def at_40_percent(store: Store, task: Task) -> bool:
    steps = await store.list_steps(task.id)
    return bool(steps) and steps[-1].data.get("percent") == 40.0


async def ended(store: Store, task: Task) -> Task | None:
    current = await store.get(Task, task.id)
    return current if current.state not in (TaskState.PENDING, TaskState.RUNNING) else None


async def test_a_conversion_cancelled_midway_leaves_no_half_file(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    library = ImageLibrary(tmp_path / "images")
    template = await available_template(sqlite_store, library, tmp_path)
    repo = library.repository(None)
    async with converter(sqlite_store, library, stalling_qemu(tmp_path), ImagesSettings()) as ref:
        task: Task = await ref.ask(Convert(template_id=template.id, format="vmdk"))
        await eventually(lambda: at_40_percent(sqlite_store, task), timeout=10)
        assert [p.name for p in repo.tmp.iterdir()] == [f"{task.id}.vmdk"]  # the half file

        assert await ref.ask(CancelConversion(task_id=task.id)) is True
        done = await eventually(lambda: ended(sqlite_store, task), timeout=10)
        assert done.state is TaskState.CANCELLED
        assert list(repo.tmp.iterdir()) == []
        assert [p.name for p in repo.objects.iterdir()] == [template.checksum]
        after = await sqlite_store.get(Template, template.id)
        assert after.state is TemplateState.AVAILABLE
        assert after.formats == {"qcow2": template.checksum}
        assert await ref.ask(CancelConversion(task_id=task.id)) is False  # nothing runs now


async def test_conversions_beyond_the_limit_wait_pending_for_a_slot(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    library = ImageLibrary(tmp_path / "images")
    template = await available_template(sqlite_store, library, tmp_path)
    other = await available_template(sqlite_store, library, tmp_path, "tpl-2")
    settings = ImagesSettings(max_conversions=1)
    async with converter(sqlite_store, library, stalling_qemu(tmp_path), settings) as ref:
        first: Task = await ref.ask(Convert(template_id=template.id, format="vmdk"))
        second: Task = await ref.ask(Convert(template_id=other.id, format="vhdx"))
        await eventually(lambda: at_40_percent(sqlite_store, first), timeout=10)

        # The first holds the only slot (it never ends): the second waits PENDING, no step.
        async def second_began() -> bool:
            task = await sqlite_store.get(Task, second.id)
            return task.state is not TaskState.PENDING

        await never(second_began, within=0.5)
        assert await sqlite_store.list_steps(second.id) == []
        assert len(list(library.repository(None).tmp.iterdir())) == 1

        await ref.ask(CancelConversion(task_id=first.id))  # the slot frees: the second runs
        await eventually(lambda: at_40_percent(sqlite_store, second), timeout=10)
        assert (await sqlite_store.get(Task, second.id)).state is TaskState.RUNNING


async def test_two_asks_for_the_same_conversion_share_one_task(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    library = ImageLibrary(tmp_path / "images")
    template = await available_template(sqlite_store, library, tmp_path)
    async with converter(sqlite_store, library, QemuImg(), ImagesSettings()) as ref:
        asks = [ref.ask(Convert(template_id=template.id, format="vpc")) for _ in range(3)]
        tasks: list[Task] = await asyncio.gather(*asks)
        assert len({t.id for t in tasks}) == 1
        done = await eventually(lambda: ended(sqlite_store, tasks[0]), timeout=30)
        assert done.state is TaskState.SUCCEEDED, done.error
    page = await sqlite_store.list(Task, where={"subject": f"template/{template.id}"})
    assert [t.kind for t in page.items] == [CONVERT]


async def test_a_node_stopped_mid_conversion_restarts_it_and_leaves_no_half_file(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    library = ImageLibrary(tmp_path / "images", "node-a")
    template = await available_template(sqlite_store, library, tmp_path)
    repo = library.repository(None)
    settings = ImagesSettings(compare_conversions=True)
    async with converter(sqlite_store, library, stalling_qemu(tmp_path), settings) as ref:
        task: Task = await ref.ask(Convert(template_id=template.id, format="vmdk"))
        await eventually(lambda: at_40_percent(sqlite_store, task), timeout=10)
    # What a crash leaves: the task RUNNING, the template CONVERTING, a half file in scratch.
    assert (await sqlite_store.get(Task, task.id)).state is TaskState.RUNNING
    assert (await sqlite_store.get(Template, template.id)).state is TemplateState.CONVERTING
    assert [p.name for p in repo.tmp.iterdir()] == [f"{task.id}.vmdk"]

    # The same library object: its scratch is not emptied by opening it again, so removing the
    # half file is the restarted conversion's doing.
    async with converter(sqlite_store, library, QemuImg(), settings):
        done = await eventually(lambda: ended(sqlite_store, task), timeout=30)
    assert done.state is TaskState.SUCCEEDED, done.error
    steps = [(s.name, s.state) for s in await sqlite_store.list_steps(task.id)]
    assert steps == [
        ("convert", StepState.FAILED),  # interrupted
        ("convert", StepState.DONE),
        ("compare", StepState.DONE),
        ("store", StepState.DONE),
    ]
    after = await sqlite_store.get(Template, template.id)
    assert after.state is TemplateState.AVAILABLE and set(after.formats) == {"qcow2", "vmdk"}
    assert list(repo.tmp.iterdir()) == []
    assert sorted(p.name for p in repo.objects.iterdir()) == sorted(after.formats.values())
    page = await sqlite_store.list(Task, where={"subject": f"template/{template.id}"})
    assert [t.id for t in page.items] == [task.id]  # started again, not asked again


async def test_a_template_left_converting_without_a_task_is_freed(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    library = ImageLibrary(tmp_path / "images")
    orphan = await available_template(sqlite_store, library, tmp_path)
    busy = await available_template(sqlite_store, library, tmp_path, "tpl-2")
    # A crash between the template's change and its task's write leaves the first.
    await sqlite_store.update(
        Template, orphan.id, expected_version=orphan.version, state=TemplateState.CONVERTING
    )
    await request_conversion(sqlite_store, busy, "vmdk", datacenter_id="dc1", join=False)

    # Within the grace its task may be on its way: left alone.
    assert await free_orphans(sqlite_store, "dc1") == 0
    assert await free_orphans(sqlite_store, "dc1", grace=0.0) == 1
    assert (await sqlite_store.get(Template, orphan.id)).state is TemplateState.AVAILABLE
    assert (await sqlite_store.get(Template, busy.id)).state is TemplateState.CONVERTING
