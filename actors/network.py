"""The network actor: one per network, owner of its DHCP server (Abiquo's DHCP service).

It runs one ``dnsmasq`` (Debian's ``dnsmasq-base``) as an OS process bound only to the
network's bridge, with no dynamic pool: ``--dhcp-range=<network>,static`` serves only the MACs
listed in its hosts file, so dnsmasq hands out exactly what the store says. The hosts file
(``MAC,address`` per NIC) is rewritten atomically from the store on :class:`SyncDhcp` (and
periodically, as a safety net) and dnsmasq is sent SIGHUP, which re-reads it. When dnsmasq
dies the actor starts it again, with backoff; its entries come back from the store. Leases it
grants are read back from its leases file and written to the outbox as ``nic.lease`` events.

Reconciliation, at every sync: the hosts file as found is compared with the store. A NIC of the
store without an entry (``missing_entry``) and an entry without a NIC (``stale_entry``) are
drift, fixed by the rewrite; a lease for a MAC the store does not know (``unknown_lease``: a
guest that got an address before its NIC was removed, or a hand-edited file) cannot be taken
back from the guest and is reported, as a ``dhcp.drift`` event. Each is logged as
``dhcp.drift`` and counted in :class:`DhcpStatus`.

IPv6 networks get DHCPv6 with the same static entries (``MAC,[address]``; dnsmasq learns a
client's MAC from its link-layer address) and router advertisements from dnsmasq itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
from pathlib import Path
from typing import Any, assert_never

import msgspec

from cloudcore.logging import get_logger
from cloudcore.runtime import Actor, Message
from cloudcore.store import Store
from cloudcore.store.records import Network, OutboxEvent

__all__ = [
    "DhcpLease",
    "DhcpOptions",
    "DhcpStatus",
    "GetDhcpStatus",
    "NetworkActor",
    "NetworkMessage",
    "SyncDhcp",
]

_log = get_logger("actors.network")
_MAX_RESTART_DELAY = 5.0


class DhcpOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the actor runs dnsmasq. ``state_dir``: where its hosts, leases, pid and log files
    live (one subdirectory per network). ``wrapper``: a command dnsmasq is run under, e.g.
    ``["ip", "netns", "exec", "NAME"]`` when the bridge lives in a network namespace (it must
    exec dnsmasq, so the PID the actor holds is dnsmasq's)."""

    state_dir: str
    binary: str = "dnsmasq"
    wrapper: tuple[str, ...] = ()
    lease_time: str = "1h"
    #: The user dnsmasq drops to (None: its default); it must be able to read ``state_dir``.
    user: str | None = None
    resync_interval: float = 30.0
    #: Seconds between looks at the leases file (read only when it changed).
    lease_interval: float = 1.0
    restart_delay: float = 0.2


class SyncDhcp(Message, frozen=True, kw_only=True):
    """Rewrite the hosts file from the store and signal dnsmasq (if it changed); read the
    leases. Answers the :class:`DhcpStatus` after it."""


class GetDhcpStatus(Message, frozen=True, kw_only=True):
    """Answers the :class:`DhcpStatus`."""


class DhcpLease(msgspec.Struct, frozen=True, kw_only=True):
    mac: str
    address: str
    expires: int


class DhcpStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``pid`` None: dnsmasq is not running (being restarted). ``entries``: the hosts file's
    ``MAC,address`` lines; ``leases``: what dnsmasq granted."""

    network_id: str
    pid: int | None
    starts: int
    entries: tuple[str, ...]
    leases: tuple[DhcpLease, ...]
    #: Drift found so far, by kind (``missing_entry``, ``stale_entry``, ``unknown_lease``).
    drift: dict[str, int] = msgspec.field(default_factory=dict)


class _Exited(Message, frozen=True, kw_only=True):
    pid: int
    code: int


class _Start(Message, frozen=True, kw_only=True):
    pass


class _ReadLeases(Message, frozen=True, kw_only=True):
    pass


NetworkMessage = SyncDhcp | GetDhcpStatus | _Exited | _Start | _ReadLeases


class NetworkActor(Actor[NetworkMessage]):
    def __init__(self, store: Store, network: Network, options: DhcpOptions) -> None:
        self.store = store
        self.network = network
        self.options = options
        self.dir = Path(options.state_dir) / network.id
        self.process: asyncio.subprocess.Process | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.entries: tuple[str, ...] = ()
        self.leases: tuple[DhcpLease, ...] = ()
        self.starts = 0
        self.delay = options.restart_delay
        self.drift: dict[str, int] = {}
        self.written = False  # the hosts file has been written by this incarnation
        self.leases_seen: float | None = None  # mtime of the leases file last read

    async def started(self) -> None:
        await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)
        await self._sync()
        await self._start()
        self.context.schedule_periodic("resync", self.options.resync_interval, SyncDhcp())
        self.context.schedule_periodic("leases", self.options.lease_interval, _ReadLeases())

    async def stopping(self) -> None:
        await self._stop_process()

    async def before_restart(self, error: Exception) -> None:
        await self._stop_process()

    async def receive(self, message: NetworkMessage) -> Any:
        match message:
            case SyncDhcp():
                await self._sync()
                return self._status()
            case GetDhcpStatus():
                return self._status()
            case _Exited(pid=pid, code=code):
                await self._exited(pid, code)
            case _Start():
                await self._start()
            case _ReadLeases():
                await self._leases_changed()
            case _:
                assert_never(message)
        return None

    def _status(self) -> DhcpStatus:
        running = self.process is not None and self.process.returncode is None
        return DhcpStatus(
            network_id=self.network.id,
            pid=self.process.pid if running and self.process is not None else None,
            starts=self.starts,
            entries=self.entries,
            leases=self.leases,
            drift=dict(self.drift),
        )

    # ----------------------------------------------------------------- the process

    def command(self) -> list[str]:
        """dnsmasq's command line: DHCP only (no DNS), on the bridge only, static hosts only.
        An IPv6 network gets DHCPv6 (``static``: only the hosts file's addresses) and router
        advertisements telling its clients to ask it (``--enable-ra``)."""
        net = ipaddress.ip_network(self.network.cidr)
        d, o = self.dir, self.options
        if net.version == 6:
            dhcp_range = f"{net.network_address},static,{net.prefixlen},{o.lease_time}"
        else:
            dhcp_range = f"{net.network_address},static,{net.netmask},{o.lease_time}"
        args = [
            *o.wrapper,
            o.binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            f"--interface={self.network.bridge}",
            "--bind-interfaces",
            "--except-interface=lo",
            f"--dhcp-range={dhcp_range}",
            f"--dhcp-hostsfile={d / 'hosts'}",
            f"--dhcp-leasefile={d / 'leases'}",
            f"--pid-file={d / 'pid'}",
            f"--log-facility={d / 'log'}",
            "--log-dhcp",
        ]
        if o.user is not None:
            args.append(f"--user={o.user}")
        return args + (_v6_options(self.network) if net.version == 6 else _v4_options(self.network))

    async def _start(self) -> None:
        if self.process is not None and self.process.returncode is None:
            return
        if not self.network.bridge:
            _log.warning("dhcp.no_bridge", network_id=self.network.id)
            return
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a signal to the node's group does not reach it
            )
        except OSError as exc:
            _log.error("dhcp.start_failed", network_id=self.network.id, error=str(exc))
            self._retry_later()
            return
        self.starts += 1
        proc, ref = self.process, self.context.self_ref

        async def watch() -> None:
            assert proc.stderr is not None
            err = await proc.stderr.read()
            code = await proc.wait()
            if err:
                _log.warning("dhcp.stderr", network_id=self.network.id, output=err.decode()[-500:])
            ref.tell(_Exited(pid=proc.pid, code=code))

        self.watcher = asyncio.create_task(watch())
        _log.info("dhcp.started", network_id=self.network.id, pid=proc.pid, starts=self.starts)

    async def _exited(self, pid: int, code: int) -> None:
        if self.process is None or self.process.pid != pid:
            return  # an old one, stopped on purpose
        _log.warning("dhcp.exited", network_id=self.network.id, pid=pid, code=code)
        self.process = None
        self._retry_later()

    def _retry_later(self) -> None:
        self.context.schedule_once("start", self.delay, _Start())
        self.delay = min(self.delay * 2, _MAX_RESTART_DELAY)

    async def _stop_process(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self.watcher is not None:
            self.watcher.cancel()

    # ----------------------------------------------------------------- hosts and leases

    async def _sync(self) -> None:
        held = await self.store.list_ips(self.network.id)
        entries = tuple(sorted(host_entry(a.mac, a.address) for a in held if a.mac is not None))
        found = await asyncio.to_thread(_read_lines, self.dir / "hosts")
        if found is not None:
            self._found_drift(entries, found)
        if found is None or set(found) != set(entries):
            await asyncio.to_thread(_write_atomically, self.dir / "hosts", entries)
            self._signal()
            _log.info("dhcp.hosts_written", network_id=self.network.id, entries=len(entries))
        self.entries, self.written = entries, True
        if self.process is not None and self.process.returncode is None:
            self.delay = self.options.restart_delay  # it has stayed up: back to a quick restart
        await self._read_leases({a.mac: a.address for a in held if a.mac is not None})

    def _found_drift(self, entries: tuple[str, ...], found: tuple[str, ...]) -> None:
        """Count and log what the file lacks or has beyond the store, not counting the changes
        of the store since this actor last wrote it (those are its news, not drift); at its
        first sync (a restart) every difference is drift. The rewrite fixes both."""
        written = set(self.entries) if self.written else set(entries)
        for kind, lines in (
            ("missing_entry", set(entries) - set(found) - (set(entries) - written)),
            ("stale_entry", set(found) - set(entries) - (written - set(entries))),
        ):
            for line in sorted(lines):
                self._drift(kind, line)

    def _drift(self, kind: str, what: str) -> None:
        self.drift[kind] = self.drift.get(kind, 0) + 1
        _log.warning("dhcp.drift", network_id=self.network.id, kind=kind, entry=what)

    def _signal(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGHUP)

    async def _leases_changed(self) -> None:
        mtime = await asyncio.to_thread(_mtime, self.dir / "leases")
        if mtime is not None and mtime != self.leases_seen:
            held = await self.store.list_ips(self.network.id)
            await self._read_leases({a.mac: a.address for a in held if a.mac is not None})

    async def _read_leases(self, held: dict[str, str]) -> None:
        self.leases_seen = await asyncio.to_thread(_mtime, self.dir / "leases")
        macs = {address: mac for mac, address in held.items()}
        leases = await asyncio.to_thread(_parse_leases, self.dir / "leases", macs)
        known = {(lease.mac, lease.address) for lease in self.leases}
        new = [lease for lease in leases if (lease.mac, lease.address) not in known]
        self.leases = leases
        events = []
        for lease in new:
            kind = "nic.lease" if held.get(lease.mac) == lease.address else "dhcp.drift"
            data = {"mac": lease.mac, "address": lease.address}
            if kind == "dhcp.drift":
                self._drift("unknown_lease", f"{lease.mac},{lease.address}")
                data["kind"] = "unknown_lease"
            events.append(
                OutboxEvent(
                    type=kind,
                    subject=f"network/{self.network.id}",
                    tenant_id=self.network.tenant_id,
                    data=data,
                )
            )
        if events:
            await self.store.write_events(events)


def _v4_options(network: Network) -> list[str]:
    # no gateway: no default route offered
    options = [f"--dhcp-option=option:router{',' + network.gateway if network.gateway else ''}"]
    if network.dns:
        options.append(f"--dhcp-option=option:dns-server,{','.join(network.dns)}")
    return options


def _v6_options(network: Network) -> list[str]:
    options = ["--enable-ra"]  # routes come from router advertisements, not DHCPv6
    if network.dns:
        servers = ",".join(f"[{a}]" for a in network.dns)
        options.append(f"--dhcp-option=option6:dns-server,{servers}")
    return options


def host_entry(mac: str, address: str) -> str:
    """A hosts-file line: ``MAC,address`` (an IPv6 address in brackets, as dnsmasq wants)."""
    return f"{mac},[{address}]" if ":" in address else f"{mac},{address}"


def _write_atomically(path: Path, lines: tuple[str, ...]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    os.replace(tmp, path)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns / 1e9
    except FileNotFoundError:
        return None


def _read_lines(path: Path) -> tuple[str, ...] | None:
    try:
        return tuple(line for line in path.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return None


def _parse_leases(path: Path, macs: dict[str, str] | None = None) -> tuple[DhcpLease, ...]:
    """dnsmasq's leases file: ``expiry MAC address hostname client-id`` per IPv4 lease;
    ``expiry IAID address hostname DUID`` per IPv6 one (after a ``duid`` line), whose MAC is
    the one ``macs`` (address -> MAC) gives, else ``unknown``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ()
    leases = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        if ":" in parts[2]:  # an IPv6 lease
            mac = (macs or {}).get(str(ipaddress.ip_address(parts[2])), "unknown")
        else:
            mac = parts[1]
        leases.append(DhcpLease(mac=mac, address=parts[2], expires=int(parts[0])))
    return tuple(sorted(leases, key=lambda lease: (lease.mac, lease.address)))
