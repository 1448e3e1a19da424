"""Requests made with an ``Idempotency-Key``: who holds a key, the task a create made under it,
and the answer to give again."""

from __future__ import annotations

from datetime import timedelta

from cloudcore.store._conn import Conn, SqlBase, now
from cloudcore.store._domain import _struct
from cloudcore.store.records import IdempotencyKey, new_id

__all__ = ["IdempotencyOps"]

_COLS = (
    "principal, key, fingerprint, owner, task_id, status, location, body, claimed_at, expires_at"
)
_WHERE = "WHERE principal = $1 AND key = $2"
_INSERT = f"""INSERT INTO idempotency_keys ({_COLS})
VALUES ($1, $2, $3, $4, NULL, NULL, NULL, NULL, $5, $6)
ON CONFLICT (principal, key) DO NOTHING RETURNING {_COLS}"""
# An attempt that left neither a task nor an answer within its lease died before it did
# anything durable (a create writes its task with the key): another attempt may take over.
_TAKE_OVER = f"""UPDATE idempotency_keys SET owner = $4, claimed_at = $5
{_WHERE} AND fingerprint = $3 AND task_id IS NULL AND status IS NULL AND claimed_at <= $6
RETURNING {_COLS}"""


def _key(row: object) -> IdempotencyKey:
    return _struct(row, IdempotencyKey)  # type: ignore[no-any-return]


class IdempotencyOps(SqlBase):
    """The store's calls for idempotent requests."""

    async def claim_idempotency_key(
        self, principal: str, key: str, fingerprint: str, *, ttl: float, lease: float
    ) -> tuple[IdempotencyKey, bool]:
        stamp = now()
        owner = new_id("idem-")
        async with self._transaction() as conn:
            await conn.execute(
                f"DELETE FROM idempotency_keys {_WHERE} AND expires_at <= $3", principal, key, stamp
            )
            row = await conn.fetchrow(
                _INSERT,
                principal,
                key,
                fingerprint,
                owner,
                stamp,
                stamp + timedelta(seconds=ttl),
            )
            if row is None:
                row = await conn.fetchrow(
                    _TAKE_OVER,
                    principal,
                    key,
                    fingerprint,
                    owner,
                    stamp,
                    stamp - timedelta(seconds=lease),
                )
            if row is not None:
                return _key(row), True
            return _key(await self._read_key(conn, principal, key)), False

    async def _read_key(self, conn: Conn, principal: str, key: str) -> object:
        return await conn.fetchrow(f"SELECT {_COLS} FROM idempotency_keys {_WHERE}", principal, key)

    async def get_idempotency_key(self, principal: str, key: str) -> IdempotencyKey | None:
        async with self._reader() as conn:
            row = await self._read_key(conn, principal, key)
        if row is None:
            return None
        found = _key(row)
        return found if found.expires_at > now() else None

    async def answer_idempotency_key(
        self, claim: IdempotencyKey, *, status: int, location: str | None, body: str
    ) -> bool:
        async with self._writer() as conn:
            row = await conn.fetchrow(
                "UPDATE idempotency_keys SET status = $4, location = $5, body = $6 "
                f"{_WHERE} AND owner = $3 RETURNING key",
                claim.principal,
                claim.key,
                claim.owner,
                status,
                location,
                body,
            )
        return row is not None

    async def release_idempotency_key(self, claim: IdempotencyKey) -> None:
        async with self._writer() as conn:
            await conn.execute(
                f"DELETE FROM idempotency_keys {_WHERE} AND owner = $3 "
                "AND task_id IS NULL AND status IS NULL",
                claim.principal,
                claim.key,
                claim.owner,
            )

    async def purge_idempotency_keys(self) -> int:
        async with self._writer() as conn:
            rows = await conn.fetch(
                "DELETE FROM idempotency_keys WHERE expires_at <= $1 RETURNING key", now()
            )
        return len(rows)
