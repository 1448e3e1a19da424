"""Blocking migration calls, in worker threads: peer-to-peer between libvirtd instances, and a
simulated move between two test-driver hosts of this process.

A real migration is ``migrateToURI3`` with ``VIR_MIGRATE_PEER2PEER``: the source daemon connects
to the destination's URI itself. Progress is read from the domain's job statistics on a second
connection, because a call on the migrating connection waits until the migration ends. Settings
of the destination's ``extra``:

- ``migration_uri``: where the destination daemon listens for the memory stream
  (``tcp://127.0.0.1``; by default the destination's hostname, which may not resolve);
- ``migration_unsafe``: ``true`` when the disks are on a path both hosts see that libvirt does
  not know to be shared (a local file system): libvirt refuses those without
  ``VIR_MIGRATE_UNSAFE``;
- ``migration_bandwidth_mib``: a cap in MiB/s;
- ``shared_paths``: the directories the host shares with its peers; disks elsewhere are
  copied to the destination (``_disk_copy``).

The libvirt test driver cannot migrate. Its hosts (``test:///<file>``, private in-memory
hypervisors of this process) get a simulated move: the definition is copied to the destination
host's own connection, started there if it ran, and removed here. It reports ``simulated``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import libvirt

from cloudcore.errors import BackendUnavailable, Conflict, IllegalTransition
from hypervisor_drivers.libvirt import _disk_copy, _xml
from hypervisor_drivers.types import DriverSettings, GuestPower, IscsiDisk, MigrationProgress

__all__ = [
    "Moving",
    "TestHosts",
    "abort",
    "check_power",
    "migrate_p2p",
    "migrate_real",
    "simulate",
    "watch_progress",
]

_POLL_INTERVAL = 0.25
_LIVE = {GuestPower.RUNNING, GuestPower.PAUSED}
_COLD = {GuestPower.STOPPED, GuestPower.CRASHED}
_TRUE = {"1", "true", "yes"}
_FLAGS = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
_FLAGS |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE

Report = Callable[[MigrationProgress], None]


class TestHosts:
    """The connections of the test-driver hosts open in this process, by URI: a simulated
    migration defines the VM on the destination's very connection (each ``test:///<file>``
    connection is an in-memory hypervisor of its own)."""

    __test__ = False  # not a pytest class
    _lock = threading.Lock()
    _open: dict[str, Any] = {}

    @classmethod
    def add(cls, uri: str, conn: Any) -> None:
        with cls._lock:
            cls._open[uri] = conn

    @classmethod
    def remove(cls, uri: str, conn: Any) -> None:
        with cls._lock:
            if cls._open.get(uri) is conn:
                del cls._open[uri]

    @classmethod
    def get(cls, uri: str) -> Any:
        with cls._lock:
            conn = cls._open.get(uri)
        if conn is None:
            raise BackendUnavailable(f"no connected test host {uri} in this process")
        return conn


def check_power(dom: Any, power: GuestPower, live: bool) -> None:
    allowed = _LIVE if live else _COLD
    if power not in allowed:
        kind = "live" if live else "cold"
        raise IllegalTransition(f"cannot migrate VM {dom.UUIDString()} {kind}: it is {power.value}")


def migrate_p2p(
    dom: Any,
    power: GuestPower,
    destination: DriverSettings,
    *,
    live: bool,
    moving: Moving | None = None,
) -> None:
    """Peer-to-peer migration of ``dom`` to ``destination``; waits until it has ended. A live
    migration copies the disks ``moving`` names (target devices) into their pre-created
    copies on the destination (QEMU's NBD mirror; see ``_disk_copy``); the destination gets
    ``moving``'s definitions when it has them."""
    check_power(dom, power, live)
    extra = destination.extra
    flags = _FLAGS | (libvirt.VIR_MIGRATE_LIVE if live else libvirt.VIR_MIGRATE_OFFLINE)
    params: dict[str, Any] = {}
    if live:
        if extra.get("migration_uri"):
            params[libvirt.VIR_MIGRATE_PARAM_URI] = extra["migration_uri"]
        if extra.get("migration_bandwidth_mib"):
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(extra["migration_bandwidth_mib"])
        if extra.get("migration_unsafe", "").lower() in _TRUE:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        if moving is not None and moving.copy_disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(moving.copy_disks)
    if moving is not None and moving.xml is not None:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = moving.xml[0]
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = moving.xml[1]
    dom.migrateToURI3(destination.uri, params, flags)


def migrate_real(
    conn: Any,
    open_conn: Callable[[], Any],
    extra: dict[str, str],
    dom: Any,
    power: GuestPower,
    destination: DriverSettings,
    *,
    live: bool,
    report: Report,
    open_peer: Callable[[], Any],
    volumes: Sequence[IscsiDisk] = (),
) -> None:
    """A migration between libvirtd instances, progress read on a connection of its own
    (``open_conn``), the disks the destination does not share copied (``_disk_copy``): made
    on the destination first (``open_peer``), removed from wherever the VM is not afterwards.
    The iSCSI ``volumes`` are opened on the destination as they say (its initiator name; the
    CHAP secret defined on the destination's daemon first)."""
    check_power(dom, power, live)
    copies = _disk_copy.to_copy(dom.XMLDesc(0), extra, destination.extra)
    if not copies and not volumes:
        _watched(open_conn, dom, power, destination, live, report, Moving())
        return
    peer = open_peer()
    try:
        for volume in volumes:
            _xml.ensure_chap_secret(peer, volume)
        moving = Moving(copy_disks=tuple(d.dev for d in copies), xml=_target_xml(dom, volumes))
        made = _disk_copy.precreate(conn, peer, copies)
        try:
            if not live and copies:
                _disk_copy.copy_cold(conn, peer, copies, [extra, destination.extra])
            _watched(open_conn, dom, power, destination, live, report, moving)
        except BaseException:
            if not _has_domain(peer, dom.UUIDString()):  # it did not move: its copies go
                _disk_copy.discard(peer, made)
            raise
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            peer.close()
    _disk_copy.discard(conn, copies)  # it moved: the disks are where the VM is now
    for volume in volumes:  # and its volumes' secrets are the target's
        _xml.forget_chap_secret(conn, volume)


class Moving(NamedTuple):
    """What a migration carries besides the VM: the disks QEMU copies (target devices), and
    the definitions the destination gets (live, persistent) when they differ from the source's."""

    copy_disks: tuple[str, ...] = ()
    xml: tuple[str, str] | None = None


def _target_xml(dom: Any, volumes: Sequence[IscsiDisk]) -> tuple[str, str] | None:
    if not volumes:
        return None
    secure = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
    live = dom.XMLDesc(secure) if dom.isActive() else None
    persistent = dom.XMLDesc(secure | libvirt.VIR_DOMAIN_XML_INACTIVE)
    persist = _xml.with_initiators(persistent, volumes)
    return (_xml.with_initiators(live, volumes) if live else persist, persist)


def _has_domain(conn: Any, uuid: str) -> bool:
    try:
        conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError:
        return False
    return True


def _watched(
    open_conn: Callable[[], Any],
    dom: Any,
    power: GuestPower,
    destination: DriverSettings,
    live: bool,
    report: Report,
    moving: Moving,
) -> None:
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_progress,
        args=(open_conn, dom.UUIDString(), report, stop),
        name="libvirt-migration-progress",
        daemon=True,
    )
    watcher.start()
    try:
        migrate_p2p(dom, power, destination, live=live, moving=moving)
    finally:
        stop.set()
        watcher.join()


def watch_progress(
    open_conn: Callable[[], Any], uuid: str, report: Report, stop: threading.Event
) -> None:
    """Until ``stop``: read the migration job's statistics on a connection of its own and
    ``report`` them. Errors end the watch quietly: progress is a hint, the migration the truth."""
    try:
        conn = open_conn()
    except libvirt.libvirtError:
        return
    try:
        dom = conn.lookupByUUIDString(uuid)
        while not stop.wait(_POLL_INTERVAL):
            stats = dom.jobStats(0)
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                continue
            report(
                MigrationProgress(
                    data_total=int(stats.get("data_total", 0)),
                    data_processed=int(stats.get("data_processed", 0)),
                    data_remaining=int(stats.get("data_remaining", 0)),
                    elapsed_ms=int(stats.get("time_elapsed", 0)),
                    memory_bps=stats.get("memory_bps"),
                )
            )
    except libvirt.libvirtError:
        return
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def abort(open_conn: Callable[[], Any], uuid: str) -> None:
    """Abort the job running on the VM (a migration), from a connection of its own."""
    conn = open_conn()
    try:
        conn.lookupByUUIDString(uuid).abortJob()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (
            libvirt.VIR_ERR_OPERATION_INVALID,
            libvirt.VIR_ERR_NO_DOMAIN,
        ):
            raise
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def simulate(
    dom: Any, power: GuestPower, destination: DriverSettings, *, live: bool, report: Report
) -> None:
    """The test driver's stand-in: define on the destination host, start there if it ran, and
    remove it here. Refuses the same states a real migration refuses."""
    check_power(dom, power, live)
    target = TestHosts.get(destination.uri)
    uuid = dom.UUIDString()
    with contextlib.suppress(libvirt.libvirtError):
        target.lookupByUUIDString(uuid)
        raise Conflict(f"the destination {destination.uri} already has VM {uuid}")
    moved = target.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    try:
        if live:
            moved.create()
            if power is GuestPower.PAUSED:
                moved.suspend()
    except libvirt.libvirtError:
        with contextlib.suppress(libvirt.libvirtError):
            moved.undefine()
        raise
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    report(MigrationProgress(simulated=True))
