"""Grants (console tickets, web sessions): kept by digest until they expire, taken once
however many callers race for one."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from cloudcore.errors import InvalidRecord
from cloudcore.store.base import Store


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def test_a_grant_is_read_until_it_expires_and_taken_once(store: Store) -> None:
    at = datetime.now(UTC)
    digest = _digest("s1")
    await store.put_grant(digest, "console", '{"vm_id": "v"}', at + timedelta(seconds=30))
    assert await store.get_grant(digest, "console", at=at) == '{"vm_id": "v"}'
    assert await store.get_grant(digest, "session", at=at) is None  # another kind
    assert await store.get_grant(digest, "console", at=at + timedelta(seconds=30)) is None
    assert await store.take_grant(digest, "console", at=at + timedelta(seconds=30)) is None
    assert await store.take_grant(digest, "console", at=at) == '{"vm_id": "v"}'
    assert await store.take_grant(digest, "console", at=at) is None
    assert await store.get_grant(digest, "console", at=at) is None


async def test_of_concurrent_takes_exactly_one_gets_the_grant(store: Store) -> None:
    digest = _digest("raced")
    await store.put_grant(digest, "console", "p", datetime.now(UTC) + timedelta(seconds=30))
    taken = await asyncio.gather(*(store.take_grant(digest, "console") for _ in range(8)))
    assert taken.count("p") == 1 and taken.count(None) == 7


async def test_a_dropped_grant_is_gone_and_expired_ones_are_purged(store: Store) -> None:
    now = datetime.now(UTC)
    await store.put_grant(_digest("old"), "session", "o", now - timedelta(seconds=1))
    await store.put_grant(_digest("live"), "session", "l", now + timedelta(hours=1))
    await store.drop_grant(_digest("live"), "session")
    await store.drop_grant(_digest("never"), "session")  # a no-op
    assert await store.get_grant(_digest("live"), "session") is None
    async with store._reader() as conn:  # type: ignore[attr-defined]
        rows = await conn.fetch("SELECT digest FROM grants")
    assert rows == []  # the expired one went when the live one was put


async def test_a_grant_needs_a_sha256_digest(store: Store) -> None:
    with pytest.raises(InvalidRecord, match="SHA-256"):
        await store.put_grant("the-secret-itself", "console", "p", datetime.now(UTC))
