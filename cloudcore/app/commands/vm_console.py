"""``cloudcore vm console VM [--serial]``: a VM's console.

Without ``--serial`` it prints the one-use WebSocket URL of the graphical console (VNC, as
noVNC speaks it) and the web console's page for it. With ``--serial`` it attaches this terminal
to the VM's serial console: what the VM writes is shown, what is typed is sent, raw (Ctrl-C goes
to the VM); ``Ctrl-]`` detaches, as in ``virsh console``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp

from cloudcore.app.client import ApiFailure, Client
from cloudcore.app.commands._api import api_command

__all__ = ["add_console"]

#: Ctrl-] detaches, as in virsh console and telnet.
DETACH = b"\x1d"


def add_console(actions: Any) -> None:
    help = "a VM's console: the graphical console's URL, or --serial to attach this terminal"
    parser: argparse.ArgumentParser = actions.add_parser("console", help=help, description=help)
    parser.add_argument("id")
    parser.add_argument(
        "--serial", action="store_true", help="attach to the serial console (Ctrl-] detaches)"
    )
    parser.set_defaults(handler=api_command(_console))


async def _console(client: Client, args: argparse.Namespace) -> int:
    kind = "serial" if args.serial else "vnc"
    console = await client.call(
        "GET", f"/vms/{quote(args.id, safe='')}/console", params={"kind": kind}
    )
    if not args.serial:
        origin = client.base_url.removesuffix("/api/v1")
        print(f"graphical console (VNC over a WebSocket, one use, until {console['expires_at']}):")
        print(f"  {console['url']}")
        print(f"in a browser: {origin}/ui/vms/{quote(args.id, safe='')}/console")
        return 0
    return await _attach(console["url"], args.id)


async def _attach(url: str, vm_id: str) -> int:
    fd = sys.stdin.fileno()
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            sys.stderr.write(f"Connected to the serial console of VM {vm_id}; Ctrl-] detaches.\r\n")
            sys.stderr.flush()
            with _raw(fd):
                await _pump(ws, fd)
    except aiohttp.WSServerHandshakeError as exc:
        raise ApiFailure(f"the console refused the connection (HTTP {exc.status})") from None
    except aiohttp.ClientError as exc:
        raise ApiFailure(f"the console connection failed: {exc}", connected=False) from None
    sys.stderr.write("\r\nDetached.\r\n")
    return 0


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """The terminal in raw mode (keys go to the VM as typed), restored afterwards."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _pump(ws: aiohttp.ClientWebSocketResponse, fd: int) -> None:
    """Keys to the VM until Ctrl-] (or the end of input); the VM's output to stdout until the
    console closes."""
    loop = asyncio.get_running_loop()
    typed: asyncio.Queue[bytes] = asyncio.Queue()
    loop.add_reader(fd, lambda: typed.put_nowait(os.read(fd, 1024)))
    out = sys.stdout.buffer

    async def keys() -> None:
        while (data := await typed.get()) and DETACH not in data:
            await ws.send_bytes(data)
        if data:
            await ws.send_bytes(data.split(DETACH, 1)[0])

    async def screen() -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.BINARY:
                return
            out.write(message.data)
            out.flush()

    tasks = [asyncio.create_task(keys()), asyncio.create_task(screen())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(fd)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
