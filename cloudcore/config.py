"""Typed settings: ``conf/default.toml`` overridden by ``CLOUDCORE_<SECTION>__<KEY>`` variables.

Settings decode into frozen ``msgspec`` structs that refuse unknown keys, so a typo in a file or in
an environment variable stops the node at start with the key named, instead of being ignored.
Values in environment variables are read as TOML literals when they parse as one (``5``, ``true``,
``{ a = "b" }``) and as plain strings otherwise.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from cloudcore.errors import ConfigError

__all__ = [
    "ApiSettings",
    "ClusterSettings",
    "DemoSettings",
    "EventsSettings",
    "ImagesSettings",
    "LogSettings",
    "NetworkSettings",
    "NodeSettings",
    "OrchestratorSettings",
    "PoolSettings",
    "RuntimeSettings",
    "Settings",
    "StorageConfig",
    "StoreSettings",
    "TransportSettings",
    "UiSettings",
    "default_config_path",
    "load_settings",
]

ENV_PREFIX = "CLOUDCORE_"


_MAC_PREFIX = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){0,4}$")


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


#: What a node runs (see cloudcore.app.profiles): everything, the API and the cluster-wide
#: services, or the datacenters its capabilities name.
Profile = Literal["monolithic", "server", "remote-services"]
PROFILES: tuple[Profile, ...] = ("monolithic", "server", "remote-services")


class NodeSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str = "node-1"
    data_dir: str = "var"
    capabilities: dict[str, str] = msgspec.field(default_factory=dict)
    profile: str = "monolithic"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(
                f"node.profile must be one of {', '.join(PROFILES)}, got {self.profile!r}"
            )


class LogSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class RuntimeSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ask_timeout: float = 5.0
    shutdown_timeout: float = 10.0
    dead_letter_history: int = 1000
    throughput: int = 64

    def __post_init__(self) -> None:
        for name in ("ask_timeout", "shutdown_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"runtime.{name} must be > 0")
        if self.throughput < 1:
            raise ValueError("runtime.throughput must be >= 1")


class StoreSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["sqlite", "postgres"] = "sqlite"
    # Empty: <node.data_dir>/cloudcore.db
    sqlite_path: str = ""
    # A password comes from the environment: CLOUDCORE_STORE__POSTGRES_DSN or PGPASSWORD.
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/cloudcore"
    pool_size: int = 16
    command_timeout: float = 10.0
    auto_upgrade: bool = False

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError("store.pool_size must be >= 1")
        if self.command_timeout <= 0:
            raise ValueError("store.command_timeout must be > 0")


class EventsSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    stream: str = "cloudcore:events"
    retention: int = 100_000

    def __post_init__(self) -> None:
        if self.retention < 1:
            raise ValueError("events.retention must be >= 1")


class TransportSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How actors on different nodes reach each other (see cloudcore.transport)."""

    kind: Literal["local", "amqp"] = "local"
    # No credentials here: give them through CLOUDCORE_TRANSPORT__AMQP_URL, or as
    # amqp_username / amqp_password from the environment. The URL is never logged with them.
    amqp_url: str = "amqp://127.0.0.1:5672/"
    amqp_username: str = ""
    amqp_password: str = ""
    # amqps:// URLs: the CA bundle that signs the broker's certificate ("" = the system's), and
    # a client certificate and key if the broker asks for one.
    amqp_ca_file: str = ""
    amqp_cert_file: str = ""
    amqp_key_file: str = ""
    exchange: str = "cloudcore"
    queue_type: Literal["quorum", "classic"] = "quorum"
    prefetch: int = 64
    batch_max_bytes: int = 256 * 1024
    batch_max_count: int = 2000
    batch_max_delay: float = 0.0
    confirm_window: int = 128
    max_unsent_bytes: int = 64 * 1024 * 1024
    delivery_limit: int = 5
    dedup_window: int = 100_000
    dedup_journal: bool = True
    reconnect_max_delay: float = 5.0

    def __post_init__(self) -> None:
        scheme = self.amqp_url.partition("://")[0]
        if scheme not in ("amqp", "amqps"):
            raise ValueError(
                f"transport.amqp_url must start with amqp:// or amqps://, not {scheme}"
            )
        tls_files = self.amqp_ca_file or self.amqp_cert_file or self.amqp_key_file
        if tls_files and scheme != "amqps":
            raise ValueError(
                "transport.amqp_ca_file, amqp_cert_file and amqp_key_file need an amqps:// URL"
            )
        if self.amqp_key_file and not self.amqp_cert_file:
            raise ValueError("transport.amqp_key_file needs transport.amqp_cert_file")
        for name in (
            "prefetch",
            "batch_max_bytes",
            "batch_max_count",
            "confirm_window",
            "max_unsent_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"transport.{name} must be >= 1")
        if self.batch_max_delay < 0:
            raise ValueError("transport.batch_max_delay must be >= 0")
        if self.delivery_limit < 1 or self.dedup_window < 1:
            raise ValueError("transport.delivery_limit and dedup_window must be >= 1")
        if self.reconnect_max_delay <= 0:
            raise ValueError("transport.reconnect_max_delay must be > 0")


class ClusterSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Membership: heartbeats and failure detection (see cloudcore.cluster); the lease by which
    one node at a time runs a datacenter (see actors.ownership)."""

    heartbeat_interval: float = 1.0
    node_timeout: float = 5.0
    lease_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0:
            raise ValueError("cluster.heartbeat_interval must be > 0")
        if self.node_timeout <= self.heartbeat_interval:
            raise ValueError("cluster.node_timeout must be > cluster.heartbeat_interval")
        if self.lease_seconds < 1:
            raise ValueError("cluster.lease_seconds must be >= 1")


class OrchestratorSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stop_timeout: float = 30.0
    step_deadline: float = 120.0
    migration_deadline: float = 600.0
    sweep_interval: float = 10.0
    drift_policy: Literal["follow", "enforce"] = "follow"
    schedule_attempts: int = 3
    reconnect_delay: float = 0.5
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    watchdog_interval: float = 10.0
    resume_batch: int = 64
    drain_concurrency: int = 16
    ha_grace: float = 30.0
    ha_check_interval: float = 5.0
    balance_cooldown: float = 600.0
    balance_interval: float = 60.0
    balance_max_moves: int = 20
    balance_threshold: float = 0.2
    balance_ceiling: float = 0.85
    host_wake_delay: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "balance_cooldown",
            "balance_interval",
            "balance_max_moves",
            "balance_threshold",
            "balance_ceiling",
            "host_wake_delay",
            "ha_grace",
            "ha_check_interval",
            "watchdog_interval",
            "resume_batch",
            "drain_concurrency",
            "stop_timeout",
            "step_deadline",
            "migration_deadline",
            "sweep_interval",
            "reconnect_delay",
            "cpu_overcommit",
            "memory_overcommit",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"orchestrator.{name} must be > 0")
        if self.schedule_attempts < 1:
            raise ValueError("orchestrator.schedule_attempts must be >= 1")


class ApiSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    rate_limit: float = 100.0
    rate_burst: int = 200
    token_cache_seconds: float = 5.0
    idempotency_key_seconds: float = 86400.0
    idempotency_lease_seconds: float = 30.0
    idle_timeout: float = 30.0
    auth_failures_per_second: float = 5.0
    auth_failure_burst: int = 20
    console_ticket_seconds: float = 30.0
    # Where rate limits are counted: "auto" (Redis when events.backend is redis, else memory),
    # "redis" (events.redis_url) or "memory" (this process alone).
    limits_backend: str = "auto"
    limits_key_prefix: str = "cloudcore:limits"
    workers: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"api.workers must be >= 1, got {self.workers}")
        if self.limits_backend not in ("auto", "redis", "memory"):
            raise ValueError(
                f"api.limits_backend must be auto, redis or memory, got {self.limits_backend!r}"
            )
        if self.console_ticket_seconds <= 0:
            raise ValueError("api.console_ticket_seconds must be > 0")
        if self.idle_timeout <= 0:
            raise ValueError("api.idle_timeout must be > 0")
        if self.auth_failures_per_second <= 0 or self.auth_failure_burst < 1:
            raise ValueError(
                "api.auth_failures_per_second must be > 0 and api.auth_failure_burst >= 1"
            )
        if self.idempotency_key_seconds <= 0 or self.idempotency_lease_seconds <= 0:
            raise ValueError(
                "api.idempotency_key_seconds and api.idempotency_lease_seconds must be > 0"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"api.port must be 0 to 65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"api.max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.rate_limit <= 0 or self.rate_burst < 1:
            raise ValueError("api.rate_limit must be > 0 and api.rate_burst >= 1")


class UiSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The web console served by the gateway at ``/ui/``."""

    enabled: bool = True
    # The node_modules directory holding htmx.org, htmx-ext-sse and @novnc/novnc, as
    # scripts/lib.sh ensure_web_assets installs them (empty: the pages work without live
    # updates or the graphical console, and say so).
    assets_dir: str = ""
    # Seconds a login lasts (the token must also stay valid: a revoked one ends it at once).
    session_seconds: float = 28800.0

    def __post_init__(self) -> None:
        if self.session_seconds <= 0:
            raise ValueError("ui.session_seconds must be > 0")


class ImagesSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The image library (see cloudcore.images)."""

    # Empty: <node.data_dir>/images. One directory per datacenter below it. In production this
    # is an NFS export every host of the datacenter mounts at the same path.
    repository_dir: str = ""
    # Empty: <repository dir>.hosts. Each libvirt host's cache of linked-clone bases, one
    # directory per host below it (<dir>/<host id>); a host's local disk in production.
    host_cache_dir: str = ""
    # The largest image an upload may declare (bytes); the JSON limit api.max_body_bytes does
    # not apply to the streamed upload.
    max_upload_bytes: int = 64 * 1024**3
    # Conversions (qemu-img convert) a datacenter's converter runs at once; more wait their turn.
    max_conversions: int = 1
    # Seconds a conversion, or its comparison, may take before it is killed.
    convert_deadline: float = 3600.0
    # Check every conversion's result with qemu-img compare against its source (a full read of
    # both, as long again as the conversion); a request may ask for it ("compare": true).
    compare_conversions: bool = False
    # Seconds qemu-img info / check may take on an uploaded image.
    inspect_deadline: float = 120.0
    qemu_img: str = "qemu-img"
    # An import from a URL: how many times a dropped connection is resumed (Range) before the
    # task fails (the bytes kept for a later import), seconds a read may stall, seconds in all.
    import_attempts: int = 5
    import_read_timeout: float = 60.0
    import_deadline: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if self.import_attempts < 1 or self.import_read_timeout <= 0 or self.import_deadline <= 0:
            raise ValueError("images.import_attempts, import_read_timeout, import_deadline > 0")
        if self.max_upload_bytes < 1 or self.max_conversions < 1:
            raise ValueError("images.max_upload_bytes and images.max_conversions must be >= 1")
        if self.convert_deadline <= 0 or self.inspect_deadline <= 0:
            raise ValueError("images.convert_deadline and images.inspect_deadline must be > 0")


class NetworkSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: NICs get MACs of this prefix (one to five octets, the first unicast) and random octets.
    mac_prefix: str = "52:54:00"
    #: Run a dnsmasq per network with a bridge, of the node's datacenters (needs root, or
    #: CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, and the bridges).
    dhcp: bool = False
    #: Where each network's hosts, leases and log files live ("": <node.data_dir>/dhcp).
    dhcp_dir: str = ""
    dnsmasq: str = "dnsmasq"
    #: A command dnsmasq runs under, e.g. ["ip", "netns", "exec", "NAME"] (it must exec it).
    dhcp_wrapper: list[str] = msgspec.field(default_factory=list)
    #: The user dnsmasq drops to ("": its default); it must read dhcp_dir.
    dhcp_user: str = ""
    #: Seconds between the reconciliations of a network's hosts file with the store.
    dhcp_resync: float = 30.0

    def __post_init__(self) -> None:
        if self.dhcp_resync <= 0:
            raise ValueError("network.dhcp_resync must be > 0")
        if not _MAC_PREFIX.match(self.mac_prefix) or int(self.mac_prefix[:2], 16) & 1:
            raise ValueError(
                f"network.mac_prefix must be 1 to 5 octets like '52:54:00' with a unicast first "
                f"octet, got {self.mac_prefix!r}"
            )


class PoolSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One storage pool (a storage server): the storage driver plugin that reaches it, the
    datacenter it serves, its tier, and how far thin volumes may overcommit it (the sizes of its
    volumes and snapshots may reach its capacity x ``overcommit``)."""

    id: str
    datacenter: str
    driver: str = "simulated"
    tier: str = "standard"
    # The driver's pool (a directory for tgt and simulated); empty: <node.data_dir>/storage/<id>.
    path: str = ""
    portal_host: str = "127.0.0.1"
    portal_port: int = 3260
    iqn_prefix: str = "iqn.2026-12.org.cloudcore"
    overcommit: float = 1.0
    #: Driver-specific settings (tgt: control_port, timeout_s, ...); no secrets.
    extra: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _POOL_ID.match(self.id):
            raise ValueError(f"storage pool id {self.id!r}: 1-63 lower-case letters, digits, '-'")
        if self.overcommit < 1.0:
            raise ValueError(f"storage pool {self.id}: overcommit must be >= 1.0")


class StorageConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pools: list[PoolSettings] = msgspec.field(default_factory=list)
    #: A host's iSCSI initiator name is ``<initiator_prefix>:<host id>`` unless its record has an
    #: ``iscsi.initiator`` capability.
    initiator_prefix: str = "iqn.2026-12.org.cloudcore.host"
    #: Size of the simulated pool the demo datacenter gets when no pool is configured (0: none).
    demo_pool_gib: int = 1024


_POOL_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class DemoSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    tenant: str = "demo"
    datacenter: str = "dc1"
    hosts: int = 4
    host_cpus: int = 16
    host_memory_mib: int = 65536

    def __post_init__(self) -> None:
        if self.hosts < 1 or self.host_cpus < 1 or self.host_memory_mib < 64:
            raise ValueError("demo needs hosts >= 1, host_cpus >= 1, host_memory_mib >= 64")


class Settings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    node: NodeSettings = msgspec.field(default_factory=NodeSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    runtime: RuntimeSettings = msgspec.field(default_factory=RuntimeSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    events: EventsSettings = msgspec.field(default_factory=EventsSettings)
    transport: TransportSettings = msgspec.field(default_factory=TransportSettings)
    cluster: ClusterSettings = msgspec.field(default_factory=ClusterSettings)
    orchestrator: OrchestratorSettings = msgspec.field(default_factory=OrchestratorSettings)
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    network: NetworkSettings = msgspec.field(default_factory=NetworkSettings)
    demo: DemoSettings = msgspec.field(default_factory=DemoSettings)
    images: ImagesSettings = msgspec.field(default_factory=ImagesSettings)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    ui: UiSettings = msgspec.field(default_factory=UiSettings)


def default_config_path() -> Path:
    """``conf/default.toml`` of the source tree this package runs from."""
    return Path(__file__).resolve().parent.parent / "conf" / "default.toml"


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from ``path`` (default: ``$CLOUDCORE_CONFIG`` or ``conf/default.toml``)
    and apply ``CLOUDCORE_<SECTION>__<KEY>`` overrides from ``environ`` (default: os.environ).

    Raises ConfigError naming the file, variable or key at fault.
    """
    env = os.environ if environ is None else environ
    source = Path(path or env.get(ENV_PREFIX + "CONFIG") or default_config_path())
    raw: dict[str, Any] = {}
    if path is not None or source.exists():
        try:
            raw = tomllib.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {source} is not valid TOML: {exc}") from exc
    origin = str(source)
    for var, value in sorted(env.items()):
        if var.startswith(ENV_PREFIX) and "__" in var:
            _apply_override(raw, var, value)
            origin = f"{source} with environment overrides"
        elif var.startswith(ENV_PREFIX):
            _check_plain(var)
    try:
        return msgspec.convert(raw, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration ({origin}): {_describe(exc)}") from exc


def _apply_override(raw: dict[str, Any], var: str, value: str) -> None:
    section, _, key = var[len(ENV_PREFIX) :].partition("__")
    section, key = section.lower(), key.lower()
    if not section or not key or "__" in key:
        raise ConfigError(f"{var}: expected CLOUDCORE_<SECTION>__<KEY>")
    fields = Settings.__struct_fields__
    if section not in fields:
        raise ConfigError(f"{var}: unknown section {section!r} (known: {', '.join(fields)})")
    section_type = Settings.__annotations__[section]
    known = _section_fields(section_type)
    if key not in known:
        raise ConfigError(f"{var}: unknown key {section}.{key} (known: {', '.join(known)})")
    target = raw.setdefault(section, {})
    if not isinstance(target, dict):
        raise ConfigError(f"{var}: [{section}] in the config file is not a table")
    target[key] = _parse_value(value)


def _check_plain(var: str) -> None:
    """A ``CLOUDCORE_`` variable without ``__`` is not a setting, but one that spells a
    setting with the separator lost or mistyped (``CLOUDCORE_LOGLEVEL``, ``CLOUDCORE_LOG_LEVEL``)
    is refused as a misspelt key is, rather than ignored: the operator meant to set it."""
    name = var[len(ENV_PREFIX) :].lower()
    spellings: dict[str, str] = {}
    for section, section_type in Settings.__annotations__.items():
        for key in _section_fields(section_type):
            meant = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
            spellings[f"{section}{key}"] = spellings[f"{section}_{key}"] = meant
    close = difflib.get_close_matches(name, spellings, n=1, cutoff=0.9)
    if close:
        raise ConfigError(
            f"{var}: not a setting; settings are CLOUDCORE_<SECTION>__<KEY> (two underscores): "
            f"did you mean {spellings[close[0]]}?"
        )


def _section_fields(section_type: Any) -> tuple[str, ...]:
    cls = globals()[section_type] if isinstance(section_type, str) else section_type
    fields: tuple[str, ...] = cls.__struct_fields__
    return fields


def _parse_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "Object contains unknown field `x` - at `$.node`"; make the path read as keys.
    return str(exc).replace("`$.", "`").replace("`$`", "the top level")
