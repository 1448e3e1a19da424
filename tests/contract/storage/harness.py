"""What the storage contract suite needs from each backend.

A backend joins the suite by adding a ``Harness`` factory to ``BACKENDS`` in ``conftest.py``: a
connected driver on an empty pool, a way to make another driver on the same pool, and a way to
restart the backend (a target that forgets its exports).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from storage_drivers.base import StorageDriver, VolumeInfo, VolumeSpec

INITIATOR = "iqn.2026-12.test.cloudcore:host-a"
OTHER_INITIATOR = "iqn.2026-12.test.cloudcore:host-b"


def new_id(prefix: str = "v") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Harness:
    driver: StorageDriver
    make_driver: Callable[[], StorageDriver]  # another, unconnected driver on the same pool
    restart_backend: Callable[[], None]  # the backend restarts and forgets what it served

    async def volume(self, size_mib: int = 64) -> VolumeInfo:
        return await self.driver.create_volume(VolumeSpec(volume_id=new_id(), size_mib=size_mib))
