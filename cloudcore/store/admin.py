"""``cloudcore db``: apply the schema migrations, or say where the schema stands."""

from __future__ import annotations

import asyncio
import sys
from typing import Literal

from cloudcore.config import Settings, load_settings
from cloudcore.errors import CloudcoreError
from cloudcore.logging import configure_logging
from cloudcore.store import connect_store
from cloudcore.store.migrations import LATEST

__all__ = ["db_command"]

Action = Literal["upgrade", "status"]


def db_command(action: Action, config: str | None = None) -> int:
    """Run ``cloudcore db <action>``; return the exit status (0 done / up to date, 1 not)."""
    try:
        settings = load_settings(config)
        configure_logging(settings.log.level, settings.log.format)
        return asyncio.run(_run(action, settings))
    except CloudcoreError as exc:
        print(f"cloudcore db {action}: {exc}", file=sys.stderr)
        return 1


async def _run(action: Action, settings: Settings) -> int:
    store = await connect_store(settings)
    try:
        if action == "upgrade":
            applied = await store.upgrade()
            done = ", ".join(map(str, applied)) if applied else "none (already up to date)"
            print(f"applied migrations: {done}; schema at version {LATEST}")
            return 0
        found = await store.schema_version()
        state = "up to date" if found == LATEST else "run `cloudcore db upgrade`"
        if found > LATEST:
            state = "newer than this cloudcore"
        print(f"{settings.store.backend} schema version {found}, this cloudcore {LATEST}: {state}")
        return 0 if found == LATEST else 1
    finally:
        await store.close()
