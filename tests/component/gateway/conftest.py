"""The HTTP API served on a loopback port in front of an orchestrator on libvirt's test driver.

``api`` gives a client with a token per role: ``admin`` (tenant system), ``operator`` (tenant
system), ``alice`` (a user of tenant acme), ``bob`` (a user of tenant globex). The demo
datacenter ``dc1`` has two simulated hosts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from multidict import CIMultiDict

from actors.orchestrator import Orchestrator
from actors.registration import bootstrap_demo
from actors.template_disks import TemplateDisks
from cloudcore.app.gateway import Gateway, start_api
from cloudcore.app.gateway.app import bound_port
from cloudcore.app.gateway.bootstrap import issue_token
from cloudcore.config import ApiSettings, Settings
from cloudcore.images import ImageLibrary, QemuImg, image_root
from cloudcore.runtime import ActorSystem
from cloudcore.store import Store
from cloudcore.store.records import Role, Tenant, User, new_id
from hypervisor_drivers.base import HypervisorDriver
from tests.cloud import cloud_settings, sqlite_store, start_cloud  # noqa: F401 - fixtures

ROLES = {
    "admin": ("system", Role.ADMIN),
    "operator": ("system", Role.OPERATOR),
    "alice": ("acme", Role.USER),
    "bob": ("globex", Role.USER),
}


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]  # case-insensitive

    @property
    def error_code(self) -> str | None:
        return (
            self.body["error"]["code"]
            if isinstance(self.body, dict) and "error" in self.body
            else None
        )


@dataclass
class ApiClient:
    base: str
    session: aiohttp.ClientSession
    store: Store
    orchestrator: Orchestrator
    system: ActorSystem
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    drivers: dict[str, HypervisorDriver] = field(default_factory=dict)
    gateway: Gateway | None = None

    async def call(
        self,
        method: str,
        path: str,
        who: str | None = "admin",
        json: Any = None,
        *,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """``who``: a role name of ROLES, None for no token, or a raw token secret."""
        hdrs = dict(headers or {})
        if who is not None:
            hdrs["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        body = msgspec.json.encode(json) if json is not None else data
        if body is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        async with self.session.request(method, self.base + path, data=body, headers=hdrs) as r:
            raw = await r.read()
            try:
                decoded = msgspec.json.decode(raw) if raw else None
            except msgspec.DecodeError:
                decoded = raw.decode(errors="replace")
            return Reply(r.status, decoded, CIMultiDict(r.headers))

    async def wait_task(self, task_id: str, who: str = "admin", timeout: float = 20.0) -> Any:
        return await self.orchestrator.wait(task_id, timeout)


async def make_user(store: Store, tenant: str, name: str, role: Role) -> tuple[User, str]:
    try:
        await store.get(Tenant, tenant)
    except LookupError:
        await store.create(Tenant(id=tenant, name=tenant))
    user = await store.create(User(id=new_id("usr-"), tenant_id=tenant, name=name, role=role))
    return user, await issue_token(store, user, f"{name} test token")


def api_settings(tmp_path: Path, **api: Any) -> Settings:
    base = cloud_settings(tmp_path)
    return msgspec.structs.replace(
        base,
        api=ApiSettings(
            **{
                "port": 0,
                "rate_limit": 10_000.0,
                "rate_burst": 10_000,
                "auth_failure_burst": 10_000,
                **api,
            }
        ),
    )


@pytest.fixture
async def api(
    sqlite_store: Store,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> AsyncIterator[ApiClient]:
    async with serve_api(sqlite_store, api_settings(tmp_path)) as client:
        yield client


@asynccontextmanager
async def serve_api(store: Store, settings: Settings) -> AsyncIterator[ApiClient]:
    """The API of a node on ``store``, with the image library as a node has it: VMs from
    templates get their disks from it (linked clones, or copies for drivers that import images)
    and each datacenter has its converter."""
    await bootstrap_demo(store, settings)
    drivers: dict[str, HypervisorDriver] = {}
    library = ImageLibrary(image_root(settings), settings.node.id)
    disks = TemplateDisks(store, library, QemuImg(settings.images.qemu_img), settings.images)
    system, orchestrator = await start_cloud(store, settings, drivers, disks=disks)
    gateway = Gateway.of(settings, system, orchestrator)
    runner = await start_api(gateway)
    try:
        async with aiohttp.ClientSession() as session:
            client = ApiClient(
                f"http://127.0.0.1:{bound_port(runner)}/api/v1",
                session,
                store,
                orchestrator,
                system,
                settings,
                drivers=drivers,
                gateway=gateway,
            )
            for who, (tenant, role) in ROLES.items():
                client.users[who], client.tokens[who] = await make_user(store, tenant, who, role)
            yield client
    finally:
        await runner.cleanup()
        await system.shutdown()
