"""The graphical console in a real headless chromium: noVNC (from npm) on a real QEMU VM's VNC,
through the gateway's one-use WebSocket. The README's console screenshot is taken here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudcore.store import Store
from tests.component.gateway.conftest import ApiClient, api_settings
from tests.integration.console.conftest import serve_qemu_api
from tests.integration.libvirt.conftest import domain_type, libvirtd  # noqa: F401 - fixtures
from tests.integration.web.conftest import with_assets
from tests.integration.web.test_browser import _login, running

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
async def qemu_web(
    sqlite_store: Store,
    tmp_path: Path,
    assets_dir: str,
    libvirtd: str,  # noqa: F811 - the imported fixture
    domain_type: str,  # noqa: F811
) -> AsyncIterator[ApiClient]:
    settings = with_assets(api_settings(tmp_path), assets_dir)
    async with serve_qemu_api(sqlite_store, settings, libvirtd, domain_type) as api:
        yield api


async def test_the_console_page_shows_a_real_vms_screen_through_novnc(
    browser: Any, qemu_web: ApiClient, screenshots: Path
) -> None:
    api = qemu_web
    r = await api.call(
        "POST",
        "/vms",
        "alice",
        {"name": "desk", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 32},
    )
    assert r.status == 202, r.body
    assert (await api.wait_task(r.body["id"], timeout=90)).error is None
    vm_id = str(r.body["subject"]).removeprefix("vm/")

    page = await _login(browser, api, "alice")
    await page.get_by_role("link", name="Console of desk").click()
    screen = page.locator("#screen[data-connected='true']")
    await screen.wait_for(timeout=30_000)
    assert await page.get_by_role("status").inner_text() == "Connected."
    assert await page.locator("#screen").get_attribute("data-desktop") == f"QEMU (cc-{vm_id})"
    # The first framebuffer update sizes the canvas: the VM's screen is on the page.
    await page.wait_for_function(
        "() => { const c = document.querySelector('#screen canvas');"
        " return c && c.width >= 640 && c.height >= 400; }",
        timeout=30_000,
    )
    box = await page.locator("#screen canvas").bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100
    await page.screenshot(path=str(screenshots / "console.png"))


@pytest.mark.timeout(240)  # SeaBIOS greets again at its 60 s boot retry
async def test_the_serial_page_shows_what_a_real_vm_writes_on_its_serial_port(
    browser: Any, qemu_web: ApiClient, screenshots: Path
) -> None:
    api = qemu_web
    vm_id = await running(api, "tty", 32)

    page = await _login(browser, api, "alice")
    await page.get_by_role("link", name="Serial terminal of tty").click()
    terminal = page.locator("#terminal[data-connected='true']")
    await terminal.wait_for(timeout=30_000)
    assert await page.get_by_role("status").inner_text() == "Connected."
    assert await page.evaluate("document.activeElement.id") == "terminal"  # keys go to the VM
    # SeaBIOS (useserial) greets at boot, kept by the terminal, or at its next boot retry.
    await page.wait_for_function(
        "uuid => document.querySelector('#terminal').textContent.includes('Machine UUID ' + uuid)",
        arg=vm_id,
        timeout=90_000,
    )
    text = await page.locator("#terminal").inner_text()
    assert "SeaBIOS" in text and "\x1b" not in text
    await page.get_by_label("Line to send").fill("boot")
    await page.get_by_role("button", name="Send line").click()  # sent; nothing to refuse it
    await page.screenshot(path=str(screenshots / "serial.png"))
