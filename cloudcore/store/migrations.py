"""Versioned schema migrations, one source for both SQL dialects.

Each migration is SQL written once with a few type tokens that differ between PostgreSQL and
SQLite (``%JSON%``, ``%TIME%``, ``%BOOL%``, ``%SERIAL%``), rendered per dialect. Migrations are
append-only: a released migration never changes; a change of schema is a new migration. The
applied versions are recorded in ``cloudcore_schema``; a node refuses to run on a schema that is
older or newer than :data:`LATEST` (see :func:`check_version`).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from cloudcore.errors import SchemaMismatch

__all__ = ["LATEST", "MIGRATIONS", "Dialect", "Migration", "check_version", "statements"]

Dialect = Literal["postgres", "sqlite"]


class Migration(NamedTuple):
    version: int
    description: str
    sql: str


_TOKENS: dict[Dialect, dict[str, str]] = {
    "postgres": {
        "%JSON%": "JSONB",
        "%TIME%": "TIMESTAMPTZ",
        "%BOOL%": "BOOLEAN",
        "%SERIAL%": "BIGSERIAL PRIMARY KEY",
    },
    "sqlite": {
        "%JSON%": "TEXT",
        "%TIME%": "TEXT",
        "%BOOL%": "INTEGER",
        "%SERIAL%": "INTEGER PRIMARY KEY AUTOINCREMENT",
    },
}

# Every table of a record with an id starts with the same four columns.
_RECORD = """id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    created_at %TIME% NOT NULL,
    updated_at %TIME% NOT NULL"""

_V1 = f"""
CREATE TABLE cloudcore_schema (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at %TIME% NOT NULL
);
CREATE TABLE tenants (
    {_RECORD},
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL
);
CREATE TABLE users (
    {_RECORD},
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    disabled %BOOL% NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX users_tenant ON users (tenant_id, id);
CREATE TABLE api_tokens (
    {_RECORD},
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at %TIME%
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, id);
CREATE INDEX api_tokens_user ON api_tokens (user_id, id);
CREATE TABLE datacenters (
    {_RECORD},
    name TEXT NOT NULL UNIQUE,
    location TEXT NOT NULL
);
CREATE TABLE hosts (
    {_RECORD},
    datacenter_id TEXT NOT NULL REFERENCES datacenters (id),
    name TEXT NOT NULL,
    hypervisor TEXT NOT NULL,
    address TEXT NOT NULL,
    cpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    cpus_used BIGINT NOT NULL,
    memory_mib_used BIGINT NOT NULL,
    health TEXT NOT NULL,
    admin_state TEXT NOT NULL,
    capabilities %JSON% NOT NULL,
    observed_at %TIME%,
    UNIQUE (datacenter_id, name),
    CONSTRAINT hosts_cpus_claimed CHECK (cpus_used >= 0 AND cpus_used <= cpus),
    CONSTRAINT hosts_memory_claimed CHECK (memory_mib_used >= 0 AND memory_mib_used <= memory_mib)
);
CREATE INDEX hosts_datacenter ON hosts (datacenter_id, id);
CREATE INDEX hosts_health ON hosts (health, id);
CREATE INDEX hosts_admin_state ON hosts (admin_state, id);
CREATE TABLE vms (
    {_RECORD},
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    datacenter_id TEXT NOT NULL REFERENCES datacenters (id),
    host_id TEXT REFERENCES hosts (id),
    name TEXT NOT NULL,
    spec %JSON% NOT NULL,
    desired_state TEXT NOT NULL,
    state TEXT NOT NULL,
    power TEXT NOT NULL,
    task_id TEXT,
    observed_at %TIME%,
    fault TEXT
);
CREATE INDEX vms_tenant ON vms (tenant_id, id);
CREATE INDEX vms_datacenter ON vms (datacenter_id, id);
CREATE INDEX vms_host ON vms (host_id, id);
CREATE INDEX vms_state ON vms (state, id);
CREATE TABLE volumes (
    {_RECORD},
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    datacenter_id TEXT NOT NULL REFERENCES datacenters (id),
    name TEXT NOT NULL,
    size_gib BIGINT NOT NULL,
    state TEXT NOT NULL,
    vm_id TEXT,
    target TEXT,
    task_id TEXT,
    fault TEXT
);
CREATE INDEX volumes_tenant ON volumes (tenant_id, id);
CREATE INDEX volumes_datacenter ON volumes (datacenter_id, id);
CREATE INDEX volumes_vm ON volumes (vm_id, id);
CREATE INDEX volumes_state ON volumes (state, id);
CREATE TABLE networks (
    {_RECORD},
    tenant_id TEXT REFERENCES tenants (id),
    datacenter_id TEXT NOT NULL REFERENCES datacenters (id),
    name TEXT NOT NULL,
    cidr TEXT NOT NULL,
    gateway TEXT,
    vlan INTEGER
);
CREATE INDEX networks_tenant ON networks (tenant_id, id);
CREATE INDEX networks_datacenter ON networks (datacenter_id, id);
CREATE TABLE ip_allocations (
    network_id TEXT NOT NULL REFERENCES networks (id),
    address TEXT NOT NULL,
    vm_id TEXT,
    tenant_id TEXT,
    created_at %TIME% NOT NULL,
    PRIMARY KEY (network_id, address)
);
CREATE INDEX ip_allocations_vm ON ip_allocations (vm_id);
CREATE TABLE templates (
    {_RECORD},
    tenant_id TEXT REFERENCES tenants (id),
    datacenter_id TEXT REFERENCES datacenters (id),
    name TEXT NOT NULL,
    os_type TEXT NOT NULL,
    disk_format TEXT NOT NULL,
    source TEXT NOT NULL,
    size_gib BIGINT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX templates_tenant ON templates (tenant_id, id);
CREATE INDEX templates_datacenter ON templates (datacenter_id, id);
CREATE TABLE tasks (
    {_RECORD},
    tenant_id TEXT,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    deadline %TIME%,
    step_count BIGINT NOT NULL,
    error TEXT,
    data %JSON% NOT NULL
);
CREATE INDEX tasks_tenant ON tasks (tenant_id, id);
CREATE INDEX tasks_subject ON tasks (subject, id);
CREATE INDEX tasks_state ON tasks (state, id);
CREATE TABLE task_steps (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    deadline %TIME%,
    error TEXT,
    data %JSON% NOT NULL,
    created_at %TIME% NOT NULL,
    updated_at %TIME% NOT NULL,
    PRIMARY KEY (task_id, seq)
);
CREATE TABLE events (
    id %SERIAL%,
    time %TIME% NOT NULL,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    tenant_id TEXT,
    actor TEXT,
    data %JSON% NOT NULL
);
CREATE INDEX events_subject ON events (subject, id);
CREATE INDEX events_tenant ON events (tenant_id, id);
CREATE TABLE quotas (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    resource TEXT NOT NULL,
    maximum BIGINT NOT NULL,
    used BIGINT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, resource),
    CONSTRAINT quotas_used CHECK (used >= 0)
)
"""

# Version 3 (numbers are handed out per change, so a gap is fine): the answers of requests
# made with an Idempotency-Key, and the task a create made under one.
_V3 = """
CREATE TABLE idempotency_keys (
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    owner TEXT NOT NULL,
    task_id TEXT,
    status INTEGER,
    location TEXT,
    body TEXT,
    claimed_at %TIME% NOT NULL,
    expires_at %TIME% NOT NULL,
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)
"""

# Events written with the change that causes them, until the relay has published them. ``seq``
# orders them; ``id`` is the event's id on the bus.
_V4 = """
CREATE TABLE outbox (
    seq %SERIAL%,
    id TEXT NOT NULL UNIQUE,
    time %TIME% NOT NULL,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    tenant_id TEXT,
    data %JSON% NOT NULL
)
"""

# Version 7, networks: what IPAM needs of a network, and the NIC's MAC and the quarantine of an
# address given back. A MAC is unique among held addresses only.
_V7 = """
ALTER TABLE networks ADD COLUMN kind TEXT NOT NULL DEFAULT 'bridge';
ALTER TABLE networks ADD COLUMN dns %JSON% NOT NULL DEFAULT '[]';
ALTER TABLE networks ADD COLUMN ranges %JSON% NOT NULL DEFAULT '[]';
ALTER TABLE networks ADD COLUMN excluded %JSON% NOT NULL DEFAULT '[]';
ALTER TABLE networks ADD COLUMN bridge TEXT NOT NULL DEFAULT '';
ALTER TABLE networks ADD COLUMN quarantine_s BIGINT NOT NULL DEFAULT 300;
ALTER TABLE networks ADD COLUMN extra %JSON% NOT NULL DEFAULT '{}';
ALTER TABLE ip_allocations ADD COLUMN mac TEXT;
ALTER TABLE ip_allocations ADD COLUMN released_at %TIME%;
CREATE UNIQUE INDEX ip_allocations_mac ON ip_allocations (mac) WHERE released_at IS NULL;
CREATE INDEX ip_allocations_tenant ON ip_allocations (tenant_id)
"""

# Version 8: templates carry their image: the real format, sizes, checksum, the formats it is
# available in (format -> sha256 of the file in the repository) and the progress of an upload.
_V8 = """
ALTER TABLE templates ADD COLUMN virtual_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN actual_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN checksum TEXT NOT NULL DEFAULT '';
ALTER TABLE templates ADD COLUMN formats %JSON% NOT NULL DEFAULT '{}';
ALTER TABLE templates ADD COLUMN upload_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN upload_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE templates ADD COLUMN uploaded_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN error TEXT
"""

# Version 9, storage: a volume's pool, tier and device on its VM; snapshots of volumes.
_V9 = f"""
ALTER TABLE volumes ADD COLUMN pool_id TEXT;
ALTER TABLE volumes ADD COLUMN tier TEXT NOT NULL DEFAULT 'standard';
ALTER TABLE volumes ADD COLUMN device TEXT;
CREATE INDEX volumes_pool ON volumes (pool_id, id);
CREATE TABLE volume_snapshots (
    {_RECORD},
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    volume_id TEXT NOT NULL REFERENCES volumes (id),
    name TEXT NOT NULL,
    size_gib BIGINT NOT NULL,
    state TEXT NOT NULL,
    fault TEXT
);
CREATE INDEX volume_snapshots_tenant ON volume_snapshots (tenant_id, id);
CREATE INDEX volume_snapshots_volume ON volume_snapshots (volume_id, id);
CREATE INDEX volume_snapshots_state ON volume_snapshots (state, id)
"""

# 12: the least a VM deployed from a template must have (refused at deploy below it).
_V12 = """
ALTER TABLE templates ADD COLUMN min_cpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE templates ADD COLUMN min_memory_mib INTEGER NOT NULL DEFAULT 0
"""

# Version 13: leases, by which one node at a time runs a datacenter. ``token`` grows by one at
# every change of holder (the fencing token); ``holder`` is one process of ``node``.
_V13 = """
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    acquired_at %TIME% NOT NULL,
    expires_at %TIME% NOT NULL
)
"""

# Version 14: names where ids are taken: a VM, host, template or volume is found by its name
# (the CLI's `vm show web`), so each kind is listed by name through an index.
_V14 = """
CREATE INDEX vms_name ON vms (name, id);
CREATE INDEX hosts_name ON hosts (name, id);
CREATE INDEX templates_name ON templates (name, id);
CREATE INDEX volumes_name ON volumes (name, id)
"""

# Version 17: balancing and power saving. A datacenter's balancing policy (off, spread,
# consolidate), run by its balancer; a host's power state (ON, STANDBY, WAKING): only ON takes a
# claim, so a host asleep or waking takes no VM.
_V17 = """
ALTER TABLE datacenters ADD COLUMN balance_policy TEXT NOT NULL DEFAULT 'off';
ALTER TABLE hosts ADD COLUMN power_state TEXT NOT NULL DEFAULT 'ON'
"""

# Version 20: listings come newest first by default (``ORDER BY created_at DESC, id DESC``):
# without an index each page of VMs or tasks sorts the whole table.
_V20 = """
CREATE INDEX vms_created ON vms (created_at, id);
CREATE INDEX tasks_created ON tasks (created_at, id)
"""

# Version 21: grants, short-lived secrets any API node checks (console tickets, web console
# sessions), kept by the SHA-256 of the secret, never the secret.
_V21 = """
CREATE TABLE grants (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    expires_at %TIME% NOT NULL
);
CREATE INDEX grants_expires ON grants (expires_at)
"""

# Versions are handed out ahead to parallel work, so there may be gaps: a database gets every
# migration it lacks, whatever its number (see SqlStore.upgrade).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1),
    Migration(3, "idempotency keys", _V3),
    Migration(4, "transactional outbox of events", _V4),
    Migration(7, "networks: IPAM fields, NIC MACs, address quarantine", _V7),
    Migration(8, "template images: format, sizes, checksum, formats, upload progress", _V8),
    Migration(9, "storage: volume pools, tiers and devices; volume snapshots", _V9),
    Migration(12, "templates: minimum CPUs and memory of a VM made from them", _V12),
    Migration(13, "leases: one node at a time runs a datacenter", _V13),
    Migration(14, "indexes to find VMs, hosts, templates and volumes by name", _V14),
    Migration(17, "balancing policy of a datacenter, power state of a host", _V17),
    Migration(20, "indexes to list VMs and tasks newest first", _V20),
    Migration(21, "grants: console tickets and web sessions any API node checks", _V21),
)

#: The schema version this code runs on.
LATEST = MIGRATIONS[-1].version


def statements(migration: Migration, dialect: Dialect) -> list[str]:
    """The SQL statements of ``migration`` in ``dialect``, in order."""
    sql = migration.sql
    for token, replacement in _TOKENS[dialect].items():
        sql = sql.replace(token, replacement)
    return [part.strip() for part in sql.split(";") if part.strip()]


def check_version(found: int) -> None:
    """Raise SchemaMismatch unless ``found`` is :data:`LATEST`, saying what to do."""
    if found < LATEST:
        raise SchemaMismatch(
            f"the database schema is at version {found}, this cloudcore needs {LATEST}: "
            "run `cloudcore db upgrade`"
        )
    if found > LATEST:
        raise SchemaMismatch(
            f"the database schema is at version {found}, newer than {LATEST} which this "
            "cloudcore knows: run the cloudcore release that upgraded it (or a newer one)"
        )
