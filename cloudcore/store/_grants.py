"""Grants: short-lived secrets a browser or client presents once or for a while (console
tickets, web console sessions), kept by the SHA-256 of the secret so every API node can check
them and the store never holds a usable secret.

:meth:`GrantOps.take_grant` is one ``DELETE ... RETURNING``: of concurrent takes of one grant,
on any node, one gets it (PostgreSQL locks the row; SQLite has one writer).
"""

from __future__ import annotations

from datetime import datetime

from cloudcore.errors import InvalidRecord
from cloudcore.store._conn import SqlBase, now

__all__ = ["GrantOps"]

_LIVE = "WHERE digest = $1 AND kind = $2 AND expires_at > $3"


def _check(digest: str, kind: str) -> None:
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise InvalidRecord("a grant's digest is a SHA-256 in 64 lower-case hex digits")
    if not kind:
        raise InvalidRecord("a grant needs a kind")


class GrantOps(SqlBase):
    """The store's calls for grants."""

    async def put_grant(self, digest: str, kind: str, payload: str, expires_at: datetime) -> None:
        _check(digest, kind)
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM grants WHERE expires_at <= $1", now())
            await conn.execute(
                "INSERT INTO grants (digest, kind, payload, expires_at) VALUES ($1, $2, $3, $4)",
                digest,
                kind,
                payload,
                expires_at,
            )

    async def get_grant(self, digest: str, kind: str, *, at: datetime | None = None) -> str | None:
        async with self._reader() as conn:
            row = await conn.fetchrow(
                f"SELECT payload FROM grants {_LIVE}", digest, kind, at or now()
            )
        return None if row is None else str(row["payload"])

    async def take_grant(self, digest: str, kind: str, *, at: datetime | None = None) -> str | None:
        async with self._writer() as conn:
            row = await conn.fetchrow(
                f"DELETE FROM grants {_LIVE} RETURNING payload", digest, kind, at or now()
            )
        return None if row is None else str(row["payload"])

    async def drop_grant(self, digest: str, kind: str) -> None:
        async with self._writer() as conn:
            await conn.execute("DELETE FROM grants WHERE digest = $1 AND kind = $2", digest, kind)
