"""What the storage contract suite needs from each backend.

A backend joins the suite by adding a ``Harness`` factory to ``BACKENDS`` in ``conftest.py``: a
connected driver on an empty pool, a way to make another driver on the same pool, a way to
restart the backend (a target that forgets its exports), and whether initiators can reach it (the
simulated driver serves no portal: the initiator-side tests skip for it, saying so).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

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
    no_initiator_side: str | None = None  # why initiators cannot reach it (None: they can)

    def require_initiator_side(self) -> None:
        """Skip, saying why, when this backend serves no real iSCSI portal."""
        if self.no_initiator_side is not None:
            pytest.skip(self.no_initiator_side)

    async def volume(self, size_mib: int = 64) -> VolumeInfo:
        return await self.driver.create_volume(VolumeSpec(volume_id=new_id(), size_mib=size_mib))
