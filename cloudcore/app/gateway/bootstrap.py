"""The first admin: on a first start with no API token in the store, make one.

``CLOUDCORE_ADMIN_TOKEN`` set: it becomes the admin token (the operator chose it). Otherwise a
token is generated and written to ``<data_dir>/admin-token``, readable by the owner alone; its
location is printed, never the secret. ``cloudcore token create`` issues more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cloudcore.app.gateway.auth import hash_token, new_token
from cloudcore.errors import AlreadyExists, ConfigError
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import ApiToken, Role, Tenant, User, new_id

__all__ = [
    "ADMIN_TOKEN_ENV",
    "ADMIN_TOKEN_FILE",
    "MIN_ADMIN_TOKEN_CHARS",
    "admin_token_from",
    "ensure_admin",
    "issue_token",
]

ADMIN_TOKEN_ENV = "CLOUDCORE_ADMIN_TOKEN"
ADMIN_TOKEN_FILE = "admin-token"
#: The shortest admin token accepted from the environment.
MIN_ADMIN_TOKEN_CHARS = 20
#: The tenant of the platform's own administrators.
SYSTEM_TENANT = "system"

_log = get_logger("cloudcore.app.gateway")


async def ensure_admin(
    store: Store, data_dir: str, environ: dict[str, str] | None = None
) -> Path | None:
    """Create the first admin and its token if the store has no token at all. Returns the
    file the generated token was written to (None: nothing made, or the token came from the
    environment)."""
    given = admin_token_from(os.environ if environ is None else environ)
    if (await store.list(ApiToken, limit=1)).items:
        return None
    secret = given or new_token()
    tenant = await _tenant(store, SYSTEM_TENANT)
    user = await _user(store, tenant.id, "admin", Role.ADMIN)
    await issue_token(store, user, "bootstrap admin", secret=secret)
    if given:
        _log.info("api.admin_token_set", source=ADMIN_TOKEN_ENV)
        return None
    path = Path(data_dir) / ADMIN_TOKEN_FILE
    _write_private(path, secret + "\n")
    _log.info("api.admin_token_created", path=str(path.resolve()))
    return path


def admin_token_from(environ: Mapping[str, str]) -> str:
    """The admin token the operator set in ``CLOUDCORE_ADMIN_TOKEN`` ("" if none). Raises
    ConfigError naming the variable if it is shorter than :data:`MIN_ADMIN_TOKEN_CHARS`, even
    when the store has a token already: a setting that is wrong stops the node, it is not
    silently ignored."""
    given = environ.get(ADMIN_TOKEN_ENV, "").strip()
    if given and len(given) < MIN_ADMIN_TOKEN_CHARS:
        raise ConfigError(
            f"{ADMIN_TOKEN_ENV} must be at least {MIN_ADMIN_TOKEN_CHARS} characters long "
            f"(it has {len(given)})"
        )
    return given


async def issue_token(
    store: Store, user: User, name: str = "", *, secret: str | None = None
) -> str:
    """A new token for ``user``; returns its secret (shown once: only its hash is kept)."""
    secret = secret or new_token()
    await store.create(
        ApiToken(
            id=new_id("tok-"),
            tenant_id=user.tenant_id,
            user_id=user.id,
            name=name,
            token_hash=hash_token(secret),
        )
    )
    return secret


async def _tenant(store: Store, name: str) -> Tenant:
    found = await store.list(Tenant, where={"name": name}, limit=1)
    if found.items:
        return found.items[0]
    try:
        return await store.create(Tenant(id=name, name=name, description="platform operators"))
    except AlreadyExists:
        return await store.get(Tenant, name)


async def _user(store: Store, tenant_id: str, name: str, role: Role) -> User:
    found = await store.list(User, where={"tenant_id": tenant_id, "name": name}, limit=1)
    if found.items:
        return found.items[0]
    return await store.create(User(id=new_id("usr-"), tenant_id=tenant_id, name=name, role=role))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
