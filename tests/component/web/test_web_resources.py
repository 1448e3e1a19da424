"""The web console's pages for volumes, networks, templates (and an image upload), drift and
the serial console, without a browser: what each role sees, what the actions do, and errors as
the API words them. The browser itself: tests/integration/web."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_vms_api import running_vm
from tests.component.web.test_web_console import _login, _origin
from tests.waiting import eventually


def _htmx(csrf: str) -> dict[str, str]:
    return {"X-CSRF-Token": csrf, "HX-Request": "true"}


async def _volume_state(api: ApiClient, name: str) -> str | None:
    found = (await api.call("GET", f"/volumes?name={name}", "alice")).body["items"]
    return found[0]["state"] if found else None


async def test_a_tenant_creates_attaches_detaches_and_deletes_a_volume(api: ApiClient) -> None:
    vm_id = await running_vm(api, name="db-vm")
    session, csrf = await _login(api, "alice")
    origin = _origin(api)
    async with session:
        async with session.post(
            origin + "/ui/volumes",
            data={"name": "data", "datacenter_id": "dc1", "size_gib": "2"},
            headers=_htmx(csrf),
        ) as r:
            assert r.status == 200 and "Creating volume data" in await r.text()
        await eventually(lambda: _is(api, "data", "AVAILABLE"), timeout=20)
        volume = (await api.call("GET", "/volumes?name=data", "alice")).body["items"][0]
        async with session.get(origin + "/ui/volumes") as r:
            page = await r.text()
        assert 'aria-label="Attach data"' in page and f'<option value="{vm_id}">db-vm' in page

        attach = origin + f"/ui/volumes/{volume['id']}/attach"
        async with session.post(attach, data={"vm_id": vm_id}, headers=_htmx(csrf)) as r:
            assert r.status == 200 and "Attach of volume data started" in await r.text()
        await eventually(lambda: _is(api, "data", "ATTACHED"), timeout=20)
        async with session.get(origin + "/ui/volumes/rows") as r:
            rows = await r.text()
        assert 'aria-label="Detach data"' in rows and "db-vm" in rows

        async with session.post(
            origin + f"/ui/volumes/{volume['id']}/delete", headers=_htmx(csrf)
        ) as r:  # attached: the API's 409
            text = await r.text()
        assert r.status == 409 and 'role="alert"' in text and "ATTACHED" in text

        async with session.post(
            origin + f"/ui/volumes/{volume['id']}/detach", headers=_htmx(csrf)
        ) as r:
            assert r.status == 200
        await eventually(lambda: _is(api, "data", "AVAILABLE"), timeout=20)
        async with session.post(
            origin + f"/ui/volumes/{volume['id']}/delete", headers=_htmx(csrf)
        ) as r:
            assert r.status == 200
        await eventually(lambda: _is(api, "data", None), timeout=20)

        async with session.post(
            origin + "/ui/volumes", data={"name": "bad", "datacenter_id": "dc1", "size_gib": "0"},
            headers=_htmx(csrf),
        ) as r:  # fmt: skip
            text = await r.text()
        assert r.status == 422 and "size_gib" in text


async def _is(api: ApiClient, name: str, state: str | None) -> bool:
    return await _volume_state(api, name) == state


async def test_networks_and_the_addresses_held_in_them(api: ApiClient) -> None:
    made = await api.call(
        "POST", "/networks", "admin",
        {"name": "lan", "datacenter_id": "dc1", "cidr": "10.81.0.0/24", "tenant_id": "acme"},
    )  # fmt: skip
    assert made.status == 201, made.body
    network_id = made.body["id"]
    await running_vm(api, nics=[{"network_id": network_id, "address": "10.81.0.7"}])
    session, _ = await _login(api, "alice")
    origin = _origin(api)
    async with session:
        async with session.get(origin + "/ui/networks") as r:
            text = await r.text()
        assert r.status == 200 and "lan" in text and "10.81.0.0/24" in text
        async with session.get(origin + f"/ui/networks/{network_id}/addresses") as r:
            text = await r.text()
        assert r.status == 200 and "10.81.0.7" in text
    bob, _ = await _login(api, "bob")
    async with bob:
        async with bob.get(origin + "/ui/networks") as r:
            assert "10.81.0.0/24" not in await r.text()  # another tenant's network
        async with bob.get(origin + f"/ui/networks/{network_id}/addresses") as r:
            assert r.status == 404 and 'role="alert"' in await r.text()


async def test_a_template_is_added_and_its_image_uploaded(api: ApiClient, tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 1024 * 1024)
    data = image.read_bytes()
    session, csrf = await _login(api, "alice")
    origin = _origin(api)
    async with session:
        async with session.post(
            origin + "/ui/templates", data={"name": "tiny", "os_type": "linux"}, headers=_htmx(csrf)
        ) as r:
            assert r.status == 200 and "Template tiny created" in await r.text()
        found = (await api.call("GET", "/templates?name=tiny", "alice")).body["items"]
        template_id = found[0]["id"]
        async with session.get(origin + "/ui/templates") as r:
            page = await r.text()
        assert f'<option value="{template_id}">tiny' in page and 'type="file"' in page

        query = {"size": str(len(data)), "sha256": hashlib.sha256(data).hexdigest()}
        url = origin + f"/ui/templates/{template_id}/image"
        async with session.put(url, params=query, data=data) as r:  # no CSRF token
            assert r.status == 403
        async with session.put(url, params=query, data=data, headers=_htmx(csrf)) as r:
            text = await r.text()
        assert r.status == 200 and "Template tiny is AVAILABLE: raw" in text, text
        async with session.get(origin + "/ui/templates/rows") as r:
            assert 'data-state="AVAILABLE"' in await r.text()
        wrong = {"size": str(len(data)), "sha256": "0" * 64}
        async with session.put(url, params=wrong, data=data, headers=_htmx(csrf)) as r:
            assert r.status >= 400 and 'role="alert"' in await r.text()


async def test_an_operator_sees_drift_and_that_there_are_no_alarms(api: ApiClient) -> None:
    await running_vm(api)
    session, _ = await _login(api, "operator")
    origin = _origin(api)
    async with session, session.get(origin + "/ui/drift") as r:
        text = await r.text()
    assert r.status == 200
    assert text.count('data-host="') == 2  # every host of the demo datacenter, swept
    assert "No drift: every pool matches the store." in text
    assert "no alarms yet" in text
    user, _ = await _login(api, "alice")
    async with user, user.get(origin + "/ui/drift") as r:
        assert r.status == 403


async def test_the_serial_page_of_a_vm_without_consoles_explains_the_409(api: ApiClient) -> None:
    vm_id = await running_vm(api, name="web")
    session, _ = await _login(api, "alice")
    async with session, session.get(_origin(api) + f"/ui/vms/{vm_id}/serial") as r:
        text = await r.text()
    assert r.status == 409 and "No serial console" in text and "unsupported_operation" in text


async def test_every_new_page_is_labelled_and_under_the_csp(api: ApiClient) -> None:
    session, _ = await _login(api, "alice")
    origin = _origin(api)
    async with session:
        for path in ("/ui/volumes", "/ui/networks", "/ui/templates"):
            async with session.get(origin + path) as r:
                text = await r.text()
            assert r.status == 200, path
            assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
            assert f'href="{path}" aria-current="page"' in text
            for field in ("volume-name", "template-name", "upload-file"):
                if f'id="{field}"' in text:
                    assert f'for="{field}"' in text, (path, field)
