"""Storage actors on the simulated storage driver beside the orchestrator on libvirt's test
driver (whose volume attach is simulated), with a SQLite store: the demo datacenter dc1 gets
its simulated pool dc1-pool."""

from tests.cloud import cloud, sqlite_store  # noqa: F401 - fixtures
