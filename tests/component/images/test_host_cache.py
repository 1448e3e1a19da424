"""Each host's cache of linked-clone bases: one checked copy of a template's file per host,
shared by its clones, made once however many deploys ask at once; a copy killed half way is
never a base; a base no clone uses is evicted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.template_disks import TemplateDisks
from cloudcore.errors import DriverError
from cloudcore.images import HostCache, ImageLibrary, QemuImg
from cloudcore.store import Store
from cloudcore.store.records import VM, Template, TemplateState, VMSpec
from tests.cloud import sqlite_store  # noqa: F401 - fixture
from tests.waiting import eventually

MIB = 1024 * 1024
needs_qemu_img = pytest.mark.skipif(
    shutil.which("qemu-img") is None,
    reason="qemu-img is not installed (scripts/lib.sh installs qemu-utils)",
)


def source_file(tmp_path: Path, size: int = 4 * MIB) -> tuple[Path, str]:
    """A file of ``size`` bytes that are not all alike, and its sha256."""
    path = tmp_path / "source.img"
    data = hashlib.sha256(b"seed").digest() * (size // 32)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_concurrent_holders_of_one_base_make_one_copy_between_them(tmp_path: Path) -> None:
    source, sha = source_file(tmp_path)
    # Two caches on one directory, as two processes would have: their locks are flocks.
    caches = [HostCache(tmp_path / "h1"), HostCache(tmp_path / "h1")]
    made: list[bool] = []

    async def want(cache: HostCache) -> None:
        async with cache.locked(sha):
            made.append(await cache.ensure_base(sha, source, source.stat().st_size))

    await asyncio.gather(*(want(c) for c in caches * 3))
    assert sorted(made) == [False] * 5 + [True]
    assert files(caches[0].bases) == [sha]
    assert caches[0].base_path(sha).read_bytes() == source.read_bytes()


async def test_a_copy_that_is_not_the_library_file_is_refused_and_not_kept(
    tmp_path: Path,
) -> None:
    source, sha = source_file(tmp_path)
    cache = HostCache(tmp_path / "h1")
    with pytest.raises(DriverError, match=r"read 4194304 bytes .* expected 4194305 bytes"):
        async with cache.base(sha, source, 4 * MIB + 1):
            pass
    source.write_bytes(b"x" * (4 * MIB))  # the right size, other bytes
    with pytest.raises(DriverError, match=f"expected 4194304 bytes of sha256 {sha}"):
        async with cache.base(sha, source, 4 * MIB):
            pass
    assert files(cache.bases) == []


_COPIER = """
import asyncio, sys
from pathlib import Path
from typing import Any
from cloudcore.images.host_cache import HostCache

async def main() -> None:
    cache = HostCache(Path(sys.argv[1]))
    async with cache.base(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])):
        pass

asyncio.run(main())
"""


@pytest.mark.timeout(60)
async def test_a_copy_killed_half_way_leaves_no_base_and_the_next_copy_is_whole(
    tmp_path: Path,
) -> None:
    source, sha = source_file(tmp_path)
    data = source.read_bytes()
    fifo = tmp_path / "slow-source"
    os.mkfifo(fifo)  # the copier reads what this test writes, no more
    cache = HostCache(tmp_path / "h1")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    copier = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _COPIER, str(cache.root), sha, str(fifo), str(len(data)), env=env
    )
    writer = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)  # waits for the copier
    try:
        await asyncio.to_thread(os.write, writer, data[: 2 * MIB])

        async def half_copied() -> bool:
            parts = list(cache.bases.glob(f"{sha}.*.part"))
            return bool(parts) and parts[0].stat().st_size >= MIB

        await eventually(half_copied, timeout=30)
        copier.send_signal(signal.SIGKILL)
        assert await copier.wait() == -signal.SIGKILL
    finally:
        os.close(writer)
    assert not cache.base_path(sha).exists()
    assert [p.name.endswith(".part") for p in cache.bases.iterdir()] == [True]
    assert await cache.cached() == []

    # The next holder of the lock (the dead copier's flock went with it) copies whole.
    async with cache.base(sha, source, len(data)) as base:
        assert base.read_bytes() == data
    assert files(cache.bases) == [sha]


async def test_a_sweep_evicts_the_bases_no_clone_uses_and_partial_copies(
    tmp_path: Path,
) -> None:
    source, sha = source_file(tmp_path)
    cache = HostCache(tmp_path / "h1")
    async with cache.base(sha, source, source.stat().st_size):
        used = cache.clone_path(sha, "vm-1")
        used.parent.mkdir(parents=True)
        used.write_bytes(b"a clone")
    other = "0" * 64
    (cache.bases / other).write_bytes(b"an unused base")
    (cache.bases / f"{other}.dead.part").write_bytes(b"half")
    assert await cache.sweep() == [other]
    assert files(cache.bases) == [sha]
    assert not await cache.evict(sha)  # vm-1 uses it
    used.unlink()
    assert await cache.evict(sha)
    assert files(cache.bases) == []


async def golden(store: Store, library: ImageLibrary, tmp_path: Path) -> Template:
    src = tmp_path / "golden.qcow2"
    args = ["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"]
    await asyncio.to_thread(subprocess.run, args, check=True)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    await library.repository(None).admit(src, sha)
    return await store.create(
        Template(
            id="tpl-golden",
            name="golden",
            checksum=sha,
            formats={"qcow2": sha},
            virtual_size=64 * MIB,
            state=TemplateState.AVAILABLE,
        )
    )


async def qemu_info(path: Path) -> Any:
    args = ["qemu-img", "info", "--output=json", str(path)]
    done = await asyncio.to_thread(subprocess.run, args, check=True, capture_output=True)
    return json.loads(done.stdout)


def cache_of(library: ImageLibrary, vm: VM) -> HostCache:
    assert vm.host_id is not None
    return library.host_cache(vm.host_id)


def vm_on(host_id: str, n: int, template_id: str) -> VM:
    return VM(
        id=f"vm-{host_id}-{n}",
        tenant_id="demo",
        datacenter_id="dc1",
        host_id=host_id,
        name=f"vm-{n}",
        spec=VMSpec(cpus=1, memory_mib=64, disk_gib=1, template_id=template_id),
    )


@needs_qemu_img
async def test_deploys_make_one_base_per_host_their_clones_share(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    library = ImageLibrary(tmp_path / "images", "node-1")
    disks = TemplateDisks(sqlite_store, library, QemuImg())
    template = await golden(sqlite_store, library, tmp_path)
    vms = [vm_on("h1", 1, template.id), vm_on("h1", 2, template.id), vm_on("h2", 1, template.id)]
    made = await asyncio.gather(*(disks.disk_for(vm) for vm in vms))

    sha = template.checksum
    assert sorted(p.name for p in library.host_cache_root.iterdir()) == ["h1", "h2"]
    for host, users in (("h1", ["vm-h1-1", "vm-h1-2"]), ("h2", ["vm-h2-1"])):
        cache = library.host_cache(host)
        assert files(cache.bases) == [sha]  # one copy per host, however many deploys
        assert await cache.clone_users(sha) == users
        for vm_id in users:
            info = await qemu_info(cache.clone_path(sha, vm_id))
            assert info["full-backing-filename"] == str(cache.base_path(sha))
    assert [d.path for d in made if d is not None] == [
        str(library.host_cache(vm.host_id or "").clone_path(sha, vm.id)) for vm in vms
    ]
    assert await library.clone_users(None, sha) == ["vm-h1-1", "vm-h1-2", "vm-h2-1"]

    # A VM defined again on another host (after a migration, or an HA restart) keeps its disk.
    moved = msgspec.structs.replace(vms[1], host_id="h2")
    again = await disks.disk_for(moved)
    first = cache_of(library, vms[1]).clone_path(sha, vms[1].id)
    assert again is not None and again.path == str(first)
    assert await library.host_cache("h2").clone_users(sha) == ["vm-h2-1"]
    await disks.remove(moved)  # wherever the clone is
    assert await library.clone_users(None, sha) == ["vm-h1-1", "vm-h2-1"]

    # Deleting h2's VM leaves its base for the next deploy there; a sweep evicts it, not h1's.
    await disks.remove(vms[2])
    assert files(library.host_cache("h2").bases) == [sha]
    assert await disks.sweep() == {"h2": [sha]}
    assert files(library.host_cache("h2").bases) == []
    assert files(library.host_cache("h1").bases) == [sha]
