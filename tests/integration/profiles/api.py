"""The server node's HTTP API as the tests drive it: status, headers and JSON of each call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.integration.profiles.launcher import TOKEN
from tests.waiting import eventually

FINAL = {"SUCCEEDED", "FAILED", "COMPENSATED", "CANCELLED"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class Api:
    def __init__(self, base: str) -> None:
        self.base = base + "/api/v1"
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None) -> Answer:
        async with self.session.request(method, self.base + path, json=body) as reply:
            empty = reply.status == 204 or reply.content_length == 0
            data = None if empty else await reply.json()
            return Answer(reply.status, dict(reply.headers), data)

    async def deploy(self, datacenter: str, name: str) -> Answer:
        return await self.call(
            "POST",
            "/vms",
            {
                "name": name,
                "datacenter_id": datacenter,
                "cpus": 1,
                "memory_mib": 128,
                "tenant_id": "demo",
            },
        )

    async def operate(self, vm_id: str, operation: str) -> Answer:
        return await self.call("POST", f"/vms/{vm_id}/{operation}", {})

    async def finished(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The task once it has ended (polled: the test stands where a client stands)."""

        async def ended() -> dict[str, Any] | None:
            task = (await self.call("GET", f"/tasks/{task_id}")).body
            return task if task["state"] in FINAL else None

        task: dict[str, Any] = await eventually(ended, timeout=timeout)
        return task

    async def vm(self, vm_id: str) -> dict[str, Any]:
        body: dict[str, Any] = (await self.call("GET", f"/vms/{vm_id}")).body
        return body

    async def node_status(self, node: str) -> str | None:
        for row in (await self.call("GET", "/system/nodes")).body["items"]:
            if row["id"] == node:
                return str(row["status"])
        return None
