"""Leases: one holder at a time for a name, until an expiry, with a fencing token.

Every change is one statement, so two nodes racing for a lease cannot both win: PostgreSQL
locks the row an ``INSERT ... ON CONFLICT DO UPDATE`` touches and checks the condition again on
the row the winner wrote; SQLite has one writer. Times come from the caller's clock (``at``,
default now): the nodes of a cluster keep their clocks in sync (NTP), as they must for the
store's other times.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any

from cloudcore.store._conn import SqlBase, now
from cloudcore.store._domain import _struct
from cloudcore.store.records import Lease

__all__ = ["LeaseOps"]

_COLS = "name, node, holder, token, acquired_at, expires_at"
# A free name is inserted with token 1; an expired lease changes hands and its token grows, as
# does one held by an ended process of the same node that the caller may reclaim ($6: a LIKE
# pattern of its holders; NULL: none, and NULL LIKE anything is not true).
_ACQUIRE = f"""INSERT INTO leases ({_COLS}) VALUES ($1, $2, $3, 1, $4, $5)
ON CONFLICT (name) DO UPDATE SET node = excluded.node, holder = excluded.holder,
    token = leases.token + 1, acquired_at = excluded.acquired_at,
    expires_at = excluded.expires_at
WHERE leases.expires_at <= excluded.acquired_at
    OR (leases.node = excluded.node AND leases.holder LIKE $6 ESCAPE '\\')
RETURNING {_COLS}"""
_HELD = "WHERE name = $1 AND holder = $2 AND token = $3"
_RENEW = f"UPDATE leases SET expires_at = $4 {_HELD} AND expires_at > $5 RETURNING {_COLS}"
_RELEASE = f"UPDATE leases SET expires_at = $4 {_HELD} AND expires_at > $4"


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern (escape character ``\\``) of the strings that start with ``prefix``."""
    return prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


def _lease(row: Any) -> Lease:
    return _struct(row, Lease)  # type: ignore[no-any-return]


class LeaseOps(SqlBase):
    """The store's calls for leases."""

    async def acquire_lease(
        self,
        name: str,
        node: str,
        holder: str,
        ttl: float,
        *,
        at: datetime | None = None,
        reclaim: str | None = None,
    ) -> Lease | None:
        stamp = at or now()
        pattern = None if reclaim is None else _like_prefix(reclaim)
        async with self._writer() as conn:
            row = await conn.fetchrow(
                _ACQUIRE, name, node, holder, stamp, stamp + timedelta(seconds=ttl), pattern
            )
        return None if row is None else _lease(row)

    async def renew_lease(
        self, lease: Lease, ttl: float, *, at: datetime | None = None
    ) -> Lease | None:
        stamp = at or now()
        async with self._writer() as conn:
            row = await conn.fetchrow(
                _RENEW,
                lease.name,
                lease.holder,
                lease.token,
                stamp + timedelta(seconds=ttl),
                stamp,
            )
        return None if row is None else _lease(row)

    async def release_lease(self, lease: Lease, *, at: datetime | None = None) -> None:
        async with self._writer() as conn:
            await conn.execute(_RELEASE, lease.name, lease.holder, lease.token, at or now())

    async def list_leases(self, prefix: str = "") -> builtins.list[Lease]:
        async with self._reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLS} FROM leases WHERE name LIKE $1 ESCAPE '\\' ORDER BY name",
                _like_prefix(prefix),
            )
        return [_lease(row) for row in rows]
