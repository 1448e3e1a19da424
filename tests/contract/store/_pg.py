"""Scratch PostgreSQL databases for tests and benchmarks: created with a random name, dropped after.

The server is the machine's PostgreSQL (``scripts/test`` starts it when absent); override the
administrative DSN with ``CLOUDCORE_TEST_POSTGRES``.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

ADMIN_DSN = os.environ.get(
    "CLOUDCORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def dsn_of(database: str, admin_dsn: str = ADMIN_DSN) -> str:
    """``admin_dsn`` pointed at ``database``."""
    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def create_database(prefix: str = "cc_test", admin_dsn: str = ADMIN_DSN) -> str:
    """Create an empty database with a unique name; return its DSN."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn_of(name, admin_dsn)


async def drop_database(dsn: str, admin_dsn: str = ADMIN_DSN) -> None:
    """Drop the database of ``dsn``, disconnecting whoever is still in it."""
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
