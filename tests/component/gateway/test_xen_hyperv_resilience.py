"""A simulated XenServer pool or Hyper-V host misbehaving under the orchestrator: malformed
replies, a lost session, a server that dies mid-call and comes back on the same address.

What must hold, seen through the API and the store: the task fails with an error naming what was
wrong; the host's health goes UNREACHABLE when its hypervisor is gone (the host actor's sweep)
and back to HEALTHY when it returns (the host actor reconnects with a fresh driver); the VMs in
the store keep their state and spec, and the hypervisor's VMs are still there, driven again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloudcore.store import Store
from cloudcore.store.records import VM
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api
from tests.component.gateway.test_xen_hyperv_api import (
    HV_PASSWORD_ENV,
    XS_PASSWORD_ENV,
    act,
    deploy,
    register,
)
from tests.simulators.winrm import HyperVHost, WinRMServer
from tests.simulators.xapi import Xapi, XapiServer
from tests.waiting import eventually


@pytest.fixture(autouse=True)
def _passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(XS_PASSWORD_ENV, "secret")
    monkeypatch.setenv(HV_PASSWORD_ENV, "Passw0rd!")


@pytest.fixture
async def swept_api(
    sqlite_store: Store,  # the gateway conftest's fixture
    tmp_path: Path,
) -> AsyncIterator[ApiClient]:
    """The API with hosts swept every 0.3 s and reconnected after 0.05 s (then backing off), and a
    step retried on a retryable error (BackendUnavailable) for 2 s before its task fails."""
    settings = api_settings(tmp_path)
    orchestrator = msgspec.structs.replace(
        settings.orchestrator, sweep_interval=0.3, reconnect_delay=0.05, step_deadline=2.0
    )
    async with serve_api(
        sqlite_store, msgspec.structs.replace(settings, orchestrator=orchestrator)
    ) as client:
        yield client


class Backend:
    """One simulated hypervisor behind a host registered through the API, stoppable and
    restartable on the same port with the same state."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.xapi = Xapi()
        self.hyperv = HyperVHost("HV01")
        self.server: XapiServer | WinRMServer | None = None
        self.port = 0

    def start(self) -> None:
        if self.kind == "xenserver":
            self.server = XapiServer(self.xapi, port=self.port).start()
        else:
            self.server = WinRMServer(self.hyperv, port=self.port).start()
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def register(self, api: ApiClient) -> str:
        if self.kind == "xenserver":
            options = {"host": "xs-host-1", "password_env": XS_PASSWORD_ENV}
        else:
            options = {"transport": "basic", "password_env": HV_PASSWORD_ENV}
            options["poll_interval"] = "60"  # only the test's own commands meet its faults
        await register(api, "sim", "sim1", self.kind, self.url, timeout="2", **options)
        return "sim1"

    def named_in(self, error: str) -> bool:
        names = ("xenserver",) if self.kind == "xenserver" else ("hyper-v", "hyperv")
        return any(name in error.lower() for name in names)

    def power(self, vm_id: str) -> str:
        if self.kind == "xenserver":
            ref = self.xapi.store.find("VM", uuid=self.xapi.vm_uuid_tagged(vm_id))[0]
            return str(self.xapi.store.get("VM", ref)["power_state"])
        (vm,) = [v for v in self.hyperv.vms.values() if vm_id in str(v["Notes"])]
        return {2: "Running", 3: "Halted"}.get(vm["State"], str(vm["State"]))


@pytest.fixture(params=["xenserver", "hyperv"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    backend = Backend(request.param)
    backend.start()
    yield backend
    backend.stop()


async def failed(api: ApiClient, vm_id: str, action: str, body: Any = None) -> str:
    r = await api.call("POST", f"/vms/{vm_id}/{action}", "alice", body)
    assert r.status == 202, r.body
    task = await api.wait_task(r.body["id"])
    assert task.state == "FAILED", task
    return str(task.error)


async def health(api: ApiClient, host_id: str) -> str:
    return str((await api.call("GET", f"/hosts/{host_id}")).body["health"])


async def test_a_malformed_reply_fails_the_task_naming_it_and_changes_nothing(
    api: ApiClient, backend: Backend
) -> None:
    host_id = await backend.register(api)
    vm = await deploy(api, "sim", start=False)
    before = await api.store.get(VM, vm["id"])
    if isinstance(backend.server, XapiServer):
        backend.server.inject("malformed", method="VM.start_on")
    else:
        assert isinstance(backend.server, WinRMServer)
        backend.server.inject("malformed")
    error = await failed(api, vm["id"], "start")
    assert error.startswith("DriverError: malformed reply from "), error
    after = await api.store.get(VM, vm["id"])
    assert (after.state, after.power, after.spec) == (before.state, before.power, before.spec)
    assert await health(api, host_id) == "HEALTHY"  # a bad reply is not a lost host
    assert (await act(api, vm["id"], "start"))["state"] == "RUNNING"
    assert backend.power(vm["id"]) == "Running"


async def test_a_lost_xapi_session_is_logged_in_again_and_events_resume(api: ApiClient) -> None:
    backend = Backend("xenserver")
    backend.start()
    try:
        host_id = await backend.register(api)
        vm = await deploy(api, "sim")
        backend.xapi.store.expire_sessions()  # a pool master restart forgets every session
        assert (await act(api, vm["id"], "stop", {"hard": True}))["state"] == "STOPPED"
        assert (await act(api, vm["id"], "start"))["state"] == "RUNNING"
        backend.xapi.guest_powers_off(backend.xapi.vm_uuid_tagged(vm["id"]))

        async def followed() -> bool:
            return (await api.call("GET", f"/vms/{vm['id']}", "alice")).body["state"] == "STOPPED"

        await eventually(followed, timeout=5)  # the event watcher logged in again too
        assert await health(api, host_id) == "HEALTHY"
    finally:
        backend.stop()


async def test_a_hypervisor_that_dies_mid_call_goes_unreachable_and_is_reconnected(
    swept_api: ApiClient, backend: Backend
) -> None:
    api = swept_api
    host_id = await backend.register(api)
    vm = await deploy(api, "sim")
    before = await api.store.get(VM, vm["id"])
    assert backend.server is not None
    backend.server.inject("drop", count=1_000)  # every call from now on: no reply
    error = await failed(api, vm["id"], "stop", {"hard": True})
    # Unreachable, or closed when the host's sweep met the dead server first: either way
    # BackendUnavailable naming the hypervisor.
    assert error.startswith("BackendUnavailable: ") and backend.named_in(error), error
    backend.stop()  # and then the server is gone altogether

    async def is_(expected: str) -> bool:
        return await health(api, host_id) == expected

    await eventually(lambda: is_("UNREACHABLE"), timeout=5)
    down = await failed(api, vm["id"], "stop", {"hard": True})
    assert down.startswith("BackendUnavailable: ") and backend.named_in(down), down

    backend.start()  # back on the same address, with the same VMs
    await eventually(lambda: is_("HEALTHY"), timeout=10)
    after = await api.store.get(VM, vm["id"])
    assert (after.state, after.spec, after.host_id) == (before.state, before.spec, before.host_id)
    assert backend.power(vm["id"]) == "Running"
    assert (await act(api, vm["id"], "stop", {"hard": True}))["state"] == "STOPPED"
    assert backend.power(vm["id"]) == "Halted"
