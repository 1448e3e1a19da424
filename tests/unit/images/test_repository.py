"""The image repository's files: a library file enters whole or not at all, once per content."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from actors.template_lifecycle import TemplateOperation, allowed, transition
from cloudcore.errors import IllegalTransition, InvalidRequest
from cloudcore.images import ImageLibrary, ImageRepository
from cloudcore.images.qemu import _follow_progress
from cloudcore.store.records import TemplateState


async def test_an_upload_resumed_at_an_offset_hashes_the_whole_file(tmp_path: Path) -> None:
    repo = ImageRepository(tmp_path)
    data = bytes(range(256)) * 1000
    first = await repo.open_upload("tpl-1", 0)
    await first.write(data[:1000])
    await first.close()
    assert await repo.partial_size("tpl-1") == 1000
    again = await repo.open_upload("tpl-1", 1000)
    await again.write(data[1000:])
    await again.close()
    assert again.hexdigest() == hashlib.sha256(data).hexdigest()
    assert repo.partial_path("tpl-1").read_bytes() == data


async def test_an_upload_started_over_drops_what_the_partial_file_held(tmp_path: Path) -> None:
    repo = ImageRepository(tmp_path)
    first = await repo.open_upload("tpl-1", 0)
    await first.write(b"x" * 100)
    await first.close()
    fresh = await repo.open_upload("tpl-1", 0)
    await fresh.write(b"y")
    await fresh.close()
    assert repo.partial_path("tpl-1").read_bytes() == b"y"


async def test_the_same_content_admitted_twice_is_stored_once(tmp_path: Path) -> None:
    repo = ImageRepository(tmp_path)
    sha = hashlib.sha256(b"disk").hexdigest()
    for name in ("a", "b"):
        part = repo.uploads / name
        part.write_bytes(b"disk")
        stored, new = await repo.admit(part, sha)
        assert stored == repo.objects / sha and new is (name == "a")
        assert not part.exists()
    assert [p.name for p in repo.objects.iterdir()] == [sha]
    capacity = await repo.capacity()
    assert capacity.images == 1 and capacity.free_bytes <= capacity.total_bytes


def test_opening_a_repository_removes_what_a_crashed_conversion_left(tmp_path: Path) -> None:
    library = ImageLibrary(tmp_path)
    repo = library.repository("dc1")
    (repo.tmp / "half.vmdk").write_bytes(b"half")
    assert ImageLibrary(tmp_path).repository("dc1").tmp.exists()
    assert list(repo.tmp.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".", "a/b", ""])
def test_a_datacenter_id_cannot_reach_outside_the_library(tmp_path: Path, name: str) -> None:
    if name == "":  # no datacenter: the shared repository
        assert ImageLibrary(tmp_path).repository(None).root == tmp_path / "_shared"
        return
    with pytest.raises(InvalidRequest):
        ImageLibrary(tmp_path).repository(name)


def test_a_file_name_that_is_no_sha256_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        ImageRepository(tmp_path).object_path("../../etc/passwd")


async def test_qemu_img_progress_records_are_parsed_in_order() -> None:
    stream = asyncio.StreamReader()
    stream.feed_data(b"    (0.00/100%)\r    (25.00/100%)\r    (5")
    stream.feed_data(b"0.00/100%)\r    (100.00/100%)")
    stream.feed_eof()
    seen: list[float] = []

    async def sink(fraction: float) -> None:
        seen.append(fraction)

    await _follow_progress(stream, sink)
    assert seen == [0.0, 0.25, 0.5, 1.0]


def test_the_template_machine_allows_one_operation_at_a_time() -> None:
    assert allowed(TemplateState.CONVERTING) == []
    assert transition(TemplateOperation.UPLOAD, TemplateState.ERROR).transient == "UPLOADING"
    with pytest.raises(IllegalTransition, match="it is CONVERTING; allowed now: none"):
        transition(TemplateOperation.DELETE, TemplateState.CONVERTING, "tpl-1")
    with pytest.raises(IllegalTransition, match="allowed now: convert, delete"):
        transition(TemplateOperation.UPLOAD, TemplateState.AVAILABLE)
