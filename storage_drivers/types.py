"""Values that cross the storage driver boundary.

Every value is a frozen ``msgspec.Struct``: drivers build them from what their backend reports and
never hand backend objects out. Sizes are in MiB (``size_mib``); the API speaks GiB and converts.
Volumes and snapshots are named by the orchestrator's ids, which must be :func:`valid_id` (they end
up in file names and iSCSI qualified names). Backend-specific settings travel in ``extra``.
"""

from __future__ import annotations

import enum
import re

import msgspec

from cloudcore.errors import InvalidRequest

__all__ = [
    "Capability",
    "Capacity",
    "Connection",
    "SnapshotInfo",
    "StorageSettings",
    "VolumeInfo",
    "VolumeSpec",
    "check_id",
]

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a valid volume or snapshot id (lower-case letters, digits and ``-``,
    1-63 characters, not starting with ``-``: a UUID is one), else ``InvalidRequest``."""
    if not _ID.match(value):
        raise InvalidRequest(
            f"{kind} id {value!r} is not 1-63 lower-case letters, digits or '-' "
            "(starting with a letter or digit)"
        )
    return value


class Capability(enum.StrEnum):
    """An optional feature of a storage driver.

    The core is mandatory and not listed: connect, close, create, get, list and delete volumes,
    export and unexport, capacity. A call that needs a capability the driver does not declare
    raises ``UnsupportedOperation`` before touching the backend.
    """

    EXTEND = "extend"  # grow a volume that is not exported
    ONLINE_EXTEND = "online_extend"  # grow a volume while it is exported, sessions open
    SNAPSHOT = "snapshot"  # create and delete snapshots, list them
    VOLUME_FROM_SNAPSHOT = "volume_from_snapshot"
    CLONE = "clone"  # a new volume with a copy of another's data
    THIN = "thin"  # volumes take backend space only as they are written
    CHAP = "chap"  # exports are protected by per-volume CHAP credentials
    SECOND_INITIATOR = "second_initiator"  # an export admits a second initiator (a migration)


class _Value(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class StorageSettings(_Value, frozen=True, kw_only=True):
    """How to reach one storage backend (one storage server).

    ``pool`` is where the backend keeps volumes, in the driver's own terms (a directory for tgt).
    ``portal_host``/``portal_port`` are what initiators connect to. Target names are
    ``{iqn_prefix}:{volume_id}``. ``extra`` holds driver-specific settings.
    """

    pool: str
    portal_host: str = "127.0.0.1"
    portal_port: int = 3260
    iqn_prefix: str = "iqn.2026-12.org.cloudcore"
    extra: dict[str, str] = msgspec.field(default_factory=dict)


class VolumeSpec(_Value, frozen=True, kw_only=True):
    """A volume to create: its id and size. ``size_mib`` must be positive."""

    volume_id: str
    size_mib: int

    def __post_init__(self) -> None:
        check_id("volume", self.volume_id)
        if self.size_mib <= 0:
            raise InvalidRequest(f"size_mib must be positive, got {self.size_mib}")


class VolumeInfo(_Value, frozen=True, kw_only=True):
    """A volume as the backend holds it now.

    ``allocated_mib`` is the backend space it takes (less than ``size_mib`` for a thin volume).
    ``exported_to`` is the initiator name the backend lets in now, None when not exported;
    ``sessions`` the initiator sessions open on its export (0 when none or not exported).
    """

    volume_id: str
    size_mib: int
    allocated_mib: int
    exported_to: str | None = None
    sessions: int = 0


class SnapshotInfo(_Value, frozen=True, kw_only=True):
    """A point-in-time copy of a volume, ``size_mib`` being the volume's size when it was taken."""

    snapshot_id: str
    volume_id: str
    size_mib: int
    allocated_mib: int


class Connection(_Value, frozen=True, kw_only=True):
    """What an initiator needs to open an exported volume: the portal, the target, the LUN, and
    the CHAP credentials (None when the driver does not declare ``CHAP``).

    ``chap_secret`` is a secret: ``repr`` never shows it, drivers never log it, and the API never
    returns it (only the hypervisor driver that attaches the volume receives it).
    """

    portal_host: str
    portal_port: int
    target_iqn: str
    lun: int
    initiator: str
    chap_username: str | None = None
    chap_secret: str | None = None

    @property
    def portal(self) -> str:
        return f"{self.portal_host}:{self.portal_port}"

    def __repr__(self) -> str:
        secret = "None" if self.chap_secret is None else "'***'"
        return (
            f"Connection(portal={self.portal!r}, target_iqn={self.target_iqn!r}, "
            f"lun={self.lun}, initiator={self.initiator!r}, "
            f"chap_username={self.chap_username!r}, chap_secret={secret})"
        )


class Capacity(_Value, frozen=True, kw_only=True):
    """The pool's space in MiB: ``total`` and ``used`` of the backing store (the filesystem or
    array), and ``provisioned``, the sum of the sizes of every volume and snapshot it holds (may
    exceed ``total`` for thin volumes; the pool actor decides how much overcommit it allows)."""

    total_mib: int
    used_mib: int
    provisioned_mib: int

    @property
    def free_mib(self) -> int:
        return self.total_mib - self.used_mib
