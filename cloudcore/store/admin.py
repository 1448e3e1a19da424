"""``cloudcore db``: apply the schema migrations, say where the schema stands, or reconcile
quota usage with what exists (a node also reconciles when it starts)."""

from __future__ import annotations

import asyncio
import sys
from typing import Literal

from cloudcore.config import Settings, load_settings
from cloudcore.errors import CloudcoreError
from cloudcore.logging import configure_logging
from cloudcore.store import Store, connect_store
from cloudcore.store.migrations import LATEST

__all__ = ["db_command"]

Action = Literal["upgrade", "status", "reconcile"]


def db_command(action: Action, config: str | None = None, *, dry_run: bool = False) -> int:
    """Run ``cloudcore db <action>``; return the exit status (0 done / up to date / no drift
    left, 1 not)."""
    try:
        settings = load_settings(config)
        configure_logging(settings.log.level, settings.log.format)
        return asyncio.run(_run(action, settings, dry_run))
    except CloudcoreError as exc:
        print(f"cloudcore db {action}: {exc}", file=sys.stderr)
        return 1


async def _run(action: Action, settings: Settings, dry_run: bool) -> int:
    store = await connect_store(settings)
    try:
        if action == "reconcile":
            return await _reconcile(store, dry_run)
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


async def _reconcile(store: Store, dry_run: bool) -> int:
    drift = await store.reconcile_quotas(fix=not dry_run)
    for d in drift:
        print(
            f"tenant {d.tenant_id} {d.resource}: recorded {d.recorded}, exists {d.actual}"
            + ("" if dry_run else f" (set to {d.actual})")
        )
    print(f"{len(drift)} quota usage(s) {'drifted' if dry_run else 'fixed'}")
    return 1 if drift and dry_run else 0
