"""``cloudcore vm console VM --serial`` in a pseudo-terminal, on a real QEMU VM: the terminal
shows what the VM wrote on its serial port; Ctrl-] detaches and restores the terminal."""

from __future__ import annotations

import asyncio
import os
import sys

import pexpect
import pytest

from tests.component.gateway.conftest import ApiClient
from tests.integration.console.test_vnc_proxy import _running_vm

pytestmark = pytest.mark.timeout(180)


def _cli(api: ApiClient, *args: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDCORE_")}
    env |= {"CLOUDCORE_API_URL": api.base, "CLOUDCORE_TOKEN": api.tokens["alice"]}
    return pexpect.spawn(sys.executable, ["-m", "cloudcore.app.cli", *args], env=env, timeout=30)


async def test_vm_console_serial_attaches_the_terminal_and_ctrl_bracket_detaches(
    qemu_api: ApiClient,
) -> None:
    vm_id = await _running_vm(qemu_api)
    child = _cli(qemu_api, "vm", "console", vm_id, "--serial")
    try:
        # pexpect blocks: it waits in a thread while this loop serves the API.
        await asyncio.to_thread(child.expect_exact, "Ctrl-] detaches")
        # The firmware's greeting: kept from boot, or the next one at its boot retry (every 5 s).
        await asyncio.to_thread(child.expect_exact, f"Machine UUID {vm_id}", timeout=30)
        child.send(b"\x1d")
        await asyncio.to_thread(child.expect_exact, "Detached.")
        await asyncio.to_thread(child.expect, pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


async def test_vm_console_prints_the_graphical_consoles_url(qemu_api: ApiClient) -> None:
    vm_id = await _running_vm(qemu_api)
    child = _cli(qemu_api, "vm", "console", vm_id)
    await asyncio.to_thread(child.expect, pexpect.EOF)
    child.close()
    text = (child.before or b"").decode()
    assert child.exitstatus == 0, text
    assert "ws://127.0.0.1:" in text and "/api/v1/consoles/" in text
    assert f"/ui/vms/{vm_id}/console" in text

    other = _cli(qemu_api, "vm", "console", "no-such-vm", "--serial")
    await asyncio.to_thread(other.expect, pexpect.EOF)
    other.close()
    assert other.exitstatus == 1 and b"[not_found]" in (other.before or b"")
