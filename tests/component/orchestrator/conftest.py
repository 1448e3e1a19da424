"""The orchestrator on the libvirt test driver (in-process), with a SQLite store."""

from tests.cloud import cloud, sqlite_store  # noqa: F401 - fixtures
