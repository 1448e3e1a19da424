"""A real headless chromium (Debian's, driven by Playwright) on the web console of a gateway.

The front-end packages come from ``CLOUDCORE_UI__ASSETS_DIR`` (scripts/test sets it) or else
from scripts/lib.sh's ``ensure_web_assets`` (npm ci into /var/cache/cloudcore, once). The
tests skip only when chromium is not installed (scripts/test installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloudcore.config import Settings, UiSettings
from tests.cloud import sqlite_store  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = "/usr/bin/chromium"
#: Where the tests save the screenshots the README shows.
SCREENSHOTS = ROOT / "cloudcore" / "app" / "web" / "screenshots"


@pytest.fixture(scope="session")
def assets_dir() -> str:
    given = os.environ.get("CLOUDCORE_UI__ASSETS_DIR")
    if given:
        return given
    done = subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/lib.sh && ensure_web_assets"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"ensure_web_assets failed: {done.stderr[-2000:]}")
    return done.stdout.strip()


def with_assets(settings: Settings, assets: str) -> Settings:
    return msgspec.structs.replace(settings, ui=UiSettings(assets_dir=assets))


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("chromium is not installed (scripts/test installs it: ensure_browser)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
