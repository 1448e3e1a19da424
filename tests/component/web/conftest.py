"""The web console served by a gateway in front of the demo cloud (libvirt's test driver)."""

from tests.cloud import sqlite_store  # noqa: F401 - fixtures
from tests.component.gateway.conftest import api  # noqa: F401 - fixtures
