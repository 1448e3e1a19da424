"""vCenter sessions: settings parsed, TLS set up, one session per vCenter shared by its hosts.

Settings (``DriverSettings``): ``uri`` is ``https://vcenter.example[:port]/sdk`` (no credentials
in it); ``extra`` names the ``datacenter`` (default: the only one), the ESXi ``host`` (required),
the ``datastore`` for new VMs (default: the host's first), and how to log in:

- ``username_env`` / ``password_env``: the environment variables holding the credentials (default
  ``CLOUDCORE_VSPHERE_USERNAME`` / ``CLOUDCORE_VSPHERE_PASSWORD``); ``settings.username`` and
  ``settings.password``, when given, win. Credentials are never logged.
- ``verify_tls``: ``true`` (default) verifies the server's certificate against the system's CAs,
  or against ``ca_file`` when given; ``false`` turns verification off (a simulator only).
- ``timeout``: seconds an HTTP request may take (default 30).

Several drivers (one per ESXi host) that name the same vCenter, user and TLS settings share one
logged-in session, counted by reference; the last ``release`` logs out.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from pyVim.connect import Disconnect, SmartStubAdapter
from pyVmomi import vim

from cloudcore.errors import BackendUnavailable, ConfigError
from hypervisor_drivers.types import DriverSettings

__all__ = ["Session", "SessionKey", "acquire", "release"]

_log = structlog.get_logger("hypervisor_drivers.vsphere")

DEFAULT_USERNAME_ENV = "CLOUDCORE_VSPHERE_USERNAME"
DEFAULT_PASSWORD_ENV = "CLOUDCORE_VSPHERE_PASSWORD"
_DEFAULT_TIMEOUT = 30.0
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class SessionKey:
    """What makes two drivers' sessions the same one."""

    host: str
    port: int
    path: str
    username: str
    verify_tls: bool
    ca_file: str | None
    timeout: float


def _credentials(settings: DriverSettings) -> tuple[str, str]:
    user_env = settings.extra.get("username_env", DEFAULT_USERNAME_ENV)
    pass_env = settings.extra.get("password_env", DEFAULT_PASSWORD_ENV)
    username = settings.username or os.environ.get(user_env)
    password = settings.password or os.environ.get(pass_env)
    if not username or password is None:
        raise ConfigError(
            f"vSphere credentials for {settings.uri}: set the environment variables "
            f"{user_env} and {pass_env} (names set by driver.username_env / driver.password_env)"
        )
    return username, password


def session_key(settings: DriverSettings) -> tuple[SessionKey, str]:
    """The session key for ``settings`` and the password (kept out of the key's repr)."""
    parts = urlsplit(settings.uri)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"a vSphere driver URI is https://vcenter[:port]/sdk, not {settings.uri}")
    if parts.username or parts.password:
        raise ConfigError("a vSphere driver URI carries no credentials; use the environment")
    username, password = _credentials(settings)
    verify = settings.extra.get("verify_tls", "true").strip().lower() not in _FALSE
    try:
        timeout = float(settings.extra.get("timeout", _DEFAULT_TIMEOUT))
    except ValueError as exc:
        raise ConfigError(f"driver.timeout is not a number of seconds: {exc}") from exc
    key = SessionKey(
        host=parts.hostname,
        port=parts.port or 443,
        path=parts.path or "/sdk",
        username=username,
        verify_tls=verify,
        ca_file=settings.extra.get("ca_file") or None,
        timeout=timeout,
    )
    return key, password


@dataclass
class Session:
    """A logged-in vCenter session. ``lost`` says why it stopped working, once it has."""

    key: SessionKey
    si: Any
    users: int = 0
    lost: str | None = None
    #: The ServiceContent, read once at login: pyvmomi's ``si.content`` is a SOAP call each
    #: time, and its references (property collector, search index, ...) never change.
    content: Any = None

    def __post_init__(self) -> None:
        if self.content is None:
            self.content = self.si.content

    def mark_lost(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            _log.warning("hypervisor.connection_lost", host=self.key.host, reason=reason)
            with _registry_lock:
                if _sessions.get(self.key) is self:
                    del _sessions[self.key]  # the next driver logs in anew


_registry_lock = threading.Lock()
_sessions: dict[SessionKey, Session] = {}


_login_locks: dict[SessionKey, threading.Lock] = {}  # one login at a time per vCenter


def _login(key: SessionKey, password: str) -> Any:
    """Blocking. A logged-in service instance. The stub is made here rather than by pyvmomi's
    ``SmartConnect`` so that a refused login closes its socket instead of leaving it to the GC
    (and no module-global service instance is kept)."""
    options: dict[str, Any] = {}
    if key.verify_tls:
        options["sslContext"] = ssl.create_default_context(cafile=key.ca_file)
    else:
        options["disableSslCertValidation"] = True
    stub = SmartStubAdapter(
        host=key.host,
        port=key.port,
        path=key.path,
        httpConnectionTimeout=key.timeout,
        **options,
    )
    try:
        si: Any = vim.ServiceInstance("ServiceInstance", stub)
        si.content.sessionManager.Login(key.username, password, None)
    except BaseException:
        stub.DropConnections()
        raise
    return si


def acquire(settings: DriverSettings) -> Session:
    """Blocking. The shared session for ``settings``' vCenter, logging in when there is none.
    Logins to one vCenter wait for each other (the second driver shares the first's session);
    logins to other vCenters do not wait. Raises ``ConfigError`` for bad settings; pyvmomi and
    transport errors pass through."""
    key, password = session_key(settings)
    with _registry_lock:
        login_lock = _login_locks.setdefault(key, threading.Lock())
    with login_lock:
        with _registry_lock:
            session = _sessions.get(key)
            if session is not None:
                session.users += 1
                return session
        session = Session(key=key, si=_login(key, password), users=1)
        with _registry_lock:
            _sessions[key] = session
    _log.info("hypervisor.session_opened", host=key.host, port=key.port)
    return session


def release(session: Session) -> None:
    """Blocking. Drop one user of ``session``; the last one logs out. Never raises."""
    with _registry_lock:
        session.users -= 1
        if session.users > 0:
            return
        if _sessions.get(session.key) is session:
            del _sessions[session.key]
    with contextlib.suppress(Exception):  # the session may be gone with its server
        Disconnect(session.si)
    with contextlib.suppress(Exception):
        session.si._stub.DropConnections()  # close the pooled sockets now, not at GC
    _log.info("hypervisor.session_closed", host=session.key.host, port=session.key.port)


def require(session: Session | None, uri: str, closed: bool) -> Session:
    if session is None:
        state = "closed" if closed else "not connected"
        raise BackendUnavailable(f"vSphere driver for {uri} is {state}")
    if session.lost is not None:
        raise BackendUnavailable(
            f"vSphere session to {uri} lost ({session.lost}); close this driver and connect a "
            "new one"
        )
    return session
