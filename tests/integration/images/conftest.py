"""The image library on a real libvirtd, with a SQLite store."""

from tests.cloud import sqlite_store  # noqa: F401 - fixtures
from tests.integration.libvirt.conftest import domain_type, libvirtd  # noqa: F401 - fixtures
