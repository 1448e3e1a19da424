"""Consoles through the HTTP API on the simulated hosts (libvirt's test driver), which have no
console: a clear 409. The real console is tested against QEMU in tests/integration/console."""

from __future__ import annotations

from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_vms_api import running_vm


async def test_a_vm_on_a_simulated_host_has_no_console_and_the_409_says_why(
    api: ApiClient,
) -> None:
    vm_id = await running_vm(api)
    r = await api.call("GET", f"/vms/{vm_id}/console", "alice")
    assert r.status == 409 and r.error_code == "unsupported_operation", r.body
    assert "does not support console" in r.body["error"]["message"]
    assert (await api.call("GET", f"/vms/{vm_id}/console", "bob")).status == 404


async def test_an_unknown_console_ticket_is_404_without_a_token(api: ApiClient) -> None:
    r = await api.call("GET", "/consoles/not-a-ticket", None)
    assert r.status == 404 and "unknown, used or expired" in r.body["error"]["message"]


async def test_the_console_endpoints_are_in_the_openapi_document(api: ApiClient) -> None:
    doc = (await api.call("GET", "/openapi.json", None)).body
    assert "get" in doc["paths"]["/api/v1/vms/{vm_id}/console"]
    assert "get" in doc["paths"]["/api/v1/consoles/{ticket}"]
