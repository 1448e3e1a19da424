"""The web console in a real headless chromium: a tenant logs in, creates a VM and watches it
reach RUNNING with no page load, stops it, sees a refused action explained, logs out; an
operator sees the hosts and the actor tree. The screenshots in the README are taken here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudcore.store import Store
from hypervisor_drivers.types import DomainSpec
from tests.component.gateway.conftest import ApiClient, api_settings, serve_api
from tests.integration.web.conftest import with_assets

pytestmark = pytest.mark.timeout(120)
_WAIT = 20_000  # ms: the longest a live update may take to show


@pytest.fixture
async def web(sqlite_store: Store, tmp_path: Path, assets_dir: str) -> AsyncIterator[ApiClient]:
    settings = with_assets(api_settings(tmp_path), assets_dir)
    async with serve_api(sqlite_store, settings) as client:
        yield client


async def _login(browser: Any, web: ApiClient, who: str) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    origin = web.base.removesuffix("/api/v1")
    await page.goto(origin + "/ui/")
    assert page.url.endswith("/ui/login")
    await page.get_by_label("API token").fill(web.tokens[who])
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/ui/vms")
    return page


async def running(web: ApiClient, name: str, memory_mib: int = 64, **fields: Any) -> str:
    """A VM of alice's, deployed: its id."""
    body = {"name": name, "datacenter_id": "dc1", "cpus": 1, "memory_mib": memory_mib, **fields}
    r = await web.call("POST", "/vms", "alice", body)
    assert r.status == 202, r.body
    assert (await web.wait_task(r.body["id"], timeout=90)).error is None
    return str(r.body["subject"]).removeprefix("vm/")


def _state(page: Any, name: str) -> Any:
    return page.locator(f"tr:has(th:text-is('{name}')) [data-state]")


async def test_a_tenant_creates_a_vm_watches_it_run_stops_it_and_sees_a_409_explained(
    browser: Any, web: ApiClient, screenshots: Path
) -> None:
    page = await _login(browser, web, "alice")
    await page.evaluate("window.notReloaded = true")

    await page.get_by_label("Name").fill("web1")
    await page.get_by_label("medium", exact=False).check()
    await page.get_by_role("button", name="Create VM").click()
    await page.get_by_role("status").filter(has_text="Creating VM web1").wait_for(timeout=_WAIT)
    running = _state(page, "web1").and_(page.locator("[data-state='RUNNING']"))
    await running.wait_for(timeout=_WAIT)
    assert await page.evaluate("window.notReloaded") is True  # no page load: live update
    await page.screenshot(path=str(screenshots / "vms.png"), full_page=True)

    await page.get_by_role("button", name="Stop web1").click()
    stopped = _state(page, "web1").and_(page.locator("[data-state='STOPPED']"))
    await stopped.wait_for(timeout=_WAIT)

    await page.get_by_role("button", name="Stop web1").click()  # stopped already: refused
    alert = page.get_by_role("alert")
    await alert.wait_for(timeout=_WAIT)
    text = await alert.inner_text()
    assert "HTTP 409" in text and "illegal_transition" in text
    assert "it is STOPPED; allowed now:" in text and "start" in text
    await page.screenshot(path=str(screenshots / "vm-409.png"))
    assert await page.evaluate("window.notReloaded") is True

    await page.get_by_role("link", name="Tasks").click()
    await page.get_by_text("vm.stop").first.wait_for(timeout=_WAIT)
    assert await page.locator("progress").count() >= 2
    await page.screenshot(path=str(screenshots / "tasks.png"), full_page=True)
    await page.get_by_role("link", name="Events").click()
    await page.get_by_text("vm.state_changed").first.wait_for(timeout=_WAIT)
    await page.get_by_role("link", name="Quotas").click()
    await page.get_by_role("heading", name="Quotas").wait_for()
    assert await page.get_by_role("link", name="Actors").count() == 0  # not an operator

    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/ui/login")
    await page.screenshot(path=str(screenshots / "login.png"))
    await page.goto(web.base.removesuffix("/api/v1") + "/ui/vms")
    assert page.url.endswith("/ui/login")  # the session is gone


async def test_an_operator_sees_hosts_with_capacity_and_the_actor_tree(
    browser: Any, web: ApiClient, screenshots: Path
) -> None:
    await running(web, "big", 2048, cpus=4)
    page = await _login(browser, web, "operator")
    await page.get_by_role("link", name="Hosts").click()
    await page.get_by_text("HEALTHY").first.wait_for(timeout=_WAIT)
    assert await page.locator("meter").count() >= 4  # CPU and memory bars per host
    claimed = await page.locator("meter").evaluate_all("ms => ms.map(m => m.value)")
    assert 4 in claimed and 2048 in claimed  # the VM's claim on its host
    await page.screenshot(path=str(screenshots / "hosts.png"), full_page=True)

    await page.get_by_role("link", name="Actors").click()
    tree = page.get_by_role("table")
    await tree.get_by_text("DatacenterActor").first.wait_for(timeout=_WAIT)
    assert await tree.get_by_text("HostActor").count() >= 2
    assert await tree.get_by_text("SchedulerActor").count() >= 1
    headers = await page.locator("thead th").all_inner_texts()
    assert "Mailbox" in headers and "Restarts" in headers
    await page.screenshot(path=str(screenshots / "actors.png"), full_page=True)


async def test_a_tenant_uses_volumes_networks_and_uploads_a_template_image(
    browser: Any, web: ApiClient, screenshots: Path, tmp_path: Path
) -> None:
    made = await web.call(
        "POST", "/networks", "admin",
        {"name": "lan", "datacenter_id": "dc1", "cidr": "10.91.0.0/24", "tenant_id": "acme"},
    )  # fmt: skip
    assert made.status == 201, made.body
    await running(web, "db", nics=[{"network_id": made.body["id"], "address": "10.91.0.5"}])
    page = await _login(browser, web, "alice")
    await page.get_by_role("link", name="Volumes").click()
    await page.wait_for_url("**/ui/volumes")
    await page.evaluate("window.notReloaded = true")
    await page.get_by_label("Name").fill("data")
    await page.get_by_label("Size (GiB)").fill("4")
    await page.get_by_role("button", name="Create volume").press("Enter")  # the keyboard
    row = page.locator("tr:has(th:text-is('data'))")
    await row.locator("[data-state='AVAILABLE']").wait_for(timeout=_WAIT)
    await page.get_by_label("VM to attach data to").select_option(label="db")
    await page.get_by_role("button", name="Attach data").click()
    await row.locator("[data-state='ATTACHED']").wait_for(timeout=_WAIT)
    assert await row.get_by_role("cell", name="db", exact=True).count() == 1
    await page.screenshot(path=str(screenshots / "volumes.png"), full_page=True)
    await page.get_by_role("button", name="Detach data").click()
    await row.locator("[data-state='AVAILABLE']").wait_for(timeout=_WAIT)
    assert await page.evaluate("window.notReloaded") is True  # live, no page load

    await page.get_by_role("link", name="Networks").click()
    await page.get_by_role("link", name="Addresses held in lan").click()
    await page.get_by_text("10.91.0.5").wait_for(timeout=_WAIT)
    await page.screenshot(path=str(screenshots / "addresses.png"), full_page=True)

    image = tmp_path / "boot.raw"
    image.write_bytes(b"\xeb\xfe" + b"\0" * (512 * 1024 - 2))
    await page.get_by_role("link", name="Templates").click()
    await page.get_by_label("Name").fill("tiny")
    await page.get_by_role("button", name="Add template").click()
    await (
        page.get_by_role("status").filter(has_text="Template tiny created").wait_for(timeout=_WAIT)
    )
    await page.reload()  # the upload form lists the new template
    await page.get_by_label("Template", exact=True).select_option(label="tiny")
    await page.get_by_label("Image file").set_input_files(str(image))
    await page.get_by_role("button", name="Upload").click()
    await (
        page.locator("#upload-status").filter(has_text="is AVAILABLE: raw").wait_for(timeout=_WAIT)
    )
    tiny = page.locator("tr:has(th:has-text('tiny')) [data-state='AVAILABLE']")
    await tiny.wait_for(timeout=_WAIT)
    await page.screenshot(path=str(screenshots / "templates.png"), full_page=True)


async def test_an_operator_sees_drift_and_orphans(
    browser: Any, web: ApiClient, screenshots: Path
) -> None:
    await running(web, "app")
    # A domain on a hypervisor the store does not know: what a sweep reports as an orphan.
    orphan = "0badc0de-0000-4000-8000-000000000001"
    driver = web.drivers["dc1-h1"]
    await driver.define_vm(DomainSpec(uuid=orphan, name="not-ours", vcpus=1, memory_mib=64))
    page = await _login(browser, web, "operator")
    await page.get_by_role("link", name="Drift").click()
    host = page.locator("tr[data-host='dc1-h1']")
    await host.get_by_text(orphan).wait_for(timeout=_WAIT)
    assert await page.locator("tr[data-host='dc1-h2']").get_by_text(orphan).count() == 0
    await page.get_by_text("No drift: every pool matches the store.").wait_for()
    await page.get_by_text("no alarms yet").wait_for()
    await page.screenshot(path=str(screenshots / "drift.png"), full_page=True)
