"""``cloudcore token create``: issue an API token, on the server machine, straight into the store.

For the first users of a new tenant, or a lost admin token: it needs no running node and no
token, only the node's settings (and so its store). The tenant and the user are created when
missing. The secret is printed once, alone on stdout (``TOKEN=$(cloudcore token create ...)``);
the store keeps only its hash.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cloudcore.config import Settings, load_settings
from cloudcore.errors import AlreadyExists, CloudcoreError, NotFound
from cloudcore.logging import configure_logging
from cloudcore.store import Store
from cloudcore.store.records import Role, Tenant, User, new_id

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    token = sub.add_parser("token", help="issue API tokens (on the server machine)")
    actions = token.add_subparsers(dest="token_command", required=True)
    create = actions.add_parser(
        "create",
        help="issue a token for a user, creating the tenant and the user if missing",
        description="Prints the token's secret once on stdout; only its hash is kept.",
    )
    create.add_argument("--tenant", required=True, help="the tenant's id")
    create.add_argument("--user", required=True, help="the user's name in the tenant")
    create.add_argument(
        "--role",
        choices=[r.value.lower() for r in Role],
        help="the role of a user created now (default: user); an existing user's must match",
    )
    create.add_argument("--name", default="", help="a label for the token")
    create.set_defaults(handler=_create)


def _create(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        configure_logging("warning", settings.log.format)
        code: int = asyncio.run(_issue(settings, args))
    except (CloudcoreError, ValueError) as exc:
        print(f"cloudcore token create: {exc}", file=sys.stderr)
        return 2
    return code


async def _issue(settings: Settings, args: argparse.Namespace) -> int:
    from cloudcore.app.gateway.bootstrap import issue_token
    from cloudcore.store import open_store

    role = None if args.role is None else Role(args.role.upper())
    store = await open_store(settings)
    try:
        tenant = await _tenant(store, args.tenant)
        user = await _user(store, tenant.id, args.user, role)
        secret = await issue_token(store, user, args.name)
    finally:
        await store.close()
    print(
        f"token for {user.name} ({user.role.value.lower()}) of tenant {tenant.id}", file=sys.stderr
    )
    print(secret)
    return 0


async def _tenant(store: Store, tenant_id: str) -> Tenant:
    try:
        return await store.get(Tenant, tenant_id)
    except NotFound:
        pass
    try:
        tenant = await store.create(Tenant(id=tenant_id, name=tenant_id))
    except AlreadyExists:  # made meanwhile, or another tenant has that name
        return await store.get(Tenant, tenant_id)
    print(f"created tenant {tenant.id}", file=sys.stderr)
    return tenant


async def _user(store: Store, tenant_id: str, name: str, role: Role | None) -> User:
    found = await store.list(User, where={"tenant_id": tenant_id, "name": name}, limit=1)
    if found.items:
        user = found.items[0]
        if role is not None and user.role is not role:
            raise ValueError(
                f"user {name} of tenant {tenant_id} has the role {user.role.value.lower()}, "
                f"not {role.value.lower()}"
            )
        if user.disabled:
            raise ValueError(f"user {name} of tenant {tenant_id} is disabled")
        return user
    user = await store.create(
        User(id=new_id("usr-"), tenant_id=tenant_id, name=name, role=role or Role.USER)
    )
    print(f"created user {name} ({user.role.value.lower()})", file=sys.stderr)
    return user
