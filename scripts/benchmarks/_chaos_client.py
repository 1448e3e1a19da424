"""The chaos benchmark's clients of the node's HTTP API: deploys that retry with their
Idempotency-Key, the ``task.finished`` subscriber (SSE with Last-Event-ID), and the reads of
the end (tasks, VMs, quotas), each patient with a node that is down for a while."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from _chaos_tally import Request, VMSeen

__all__ = ["Api", "Subscriber", "deploy"]

#: Answers worth another attempt of the same request (with the same Idempotency-Key).
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
#: One attempt's deadline, in seconds.
ATTEMPT_TIMEOUT = 30.0


class Unavailable(Exception):
    """The node did not answer a read before its deadline."""


@dataclass
class Api:
    """The node's API: its URL, the admin token and one client session."""

    session: aiohttp.ClientSession
    base: str
    token: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    async def call(
        self, method: str, path: str, body: Any = None, *, patience: float = 60.0
    ) -> Any:
        """A read or an idempotent write, retried while the node or a backend is down."""
        deadline = time.monotonic() + patience
        last = ""
        while time.monotonic() < deadline:
            try:
                async with self.session.request(
                    method,
                    self.base + path,
                    json=body,
                    headers=self.headers(),
                    timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT),
                ) as r:
                    if r.status < 300:
                        return await r.json()
                    last = f"{r.status} {await r.text()}"
                    if r.status not in RETRYABLE:
                        raise RuntimeError(f"{method} {path}: {last}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.5)
        raise Unavailable(f"{method} {path}: no answer within {patience:.0f} s (last: {last})")

    async def pages(self, path: str, *, patience: float = 60.0) -> list[dict[str, Any]]:
        """Every item of a cursor-paginated listing."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        sep = "&" if "?" in path else "?"
        while True:
            page = await self.call(
                "GET",
                f"{path}{sep}limit=1000" + (f"&cursor={cursor}" if cursor else ""),
                patience=patience,
            )
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def task_states(self, tenant: str) -> dict[str, str]:
        return {t["id"]: t["state"] for t in await self.pages(f"/tasks?tenant_id={tenant}")}

    async def vms(self, tenant: str) -> list[VMSeen]:
        return [
            VMSeen(
                id=v["id"],
                name=v["name"],
                state=v["state"],
                cpus=v["spec"]["cpus"],
                memory_mib=v["spec"]["memory_mib"],
            )
            for v in await self.pages(f"/vms?tenant_id={tenant}")
        ]

    async def finished_in_history(self) -> set[str]:
        """The tasks whose task.finished the bus still holds (GET /events, from the start)."""
        tasks: set[str] = set()
        after = "0"
        while True:
            page = await self.call("GET", f"/events?types=task.finished&limit=1000&after={after}")
            tasks.update(e["data"].get("task_id", "") for e in page["items"])
            if not page.get("next_cursor"):
                return tasks
            after = page["next_cursor"]

    async def quota_used(self, tenant: str) -> dict[str, int]:
        got = await self.call("GET", f"/tenants/{tenant}/quotas")
        return {q["resource"]: q["used"] for q in got["items"]}


async def deploy(api: Api, request: Request, body: dict[str, Any], give_up_at: float) -> None:
    """POST /vms until a 202 or an answer not worth retrying, every attempt with the request's
    Idempotency-Key; a cut-off attempt (connection lost, timeout) is retried too, since the
    client cannot know whether it was done. Records every attempt in ``request``."""
    delay = 0.2
    while time.monotonic() < give_up_at:
        retry_after = 0.0
        try:
            async with api.session.post(
                api.base + "/vms",
                json=body,
                headers=api.headers(**{"Idempotency-Key": request.key}),
                timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT),
            ) as r:
                request.attempts.append(str(r.status))
                if r.status == 202:
                    request.task_ids.append((await r.json())["id"])
                    request.final = "202"
                    return
                await r.read()
                if r.status not in RETRYABLE:
                    request.final = str(r.status)
                    return
                retry_after = float(r.headers.get("Retry-After", "0") or 0)
        except (aiohttp.ClientError, TimeoutError) as exc:
            request.attempts.append(type(exc).__name__)
        await asyncio.sleep(max(retry_after, delay * random.uniform(0.5, 1.5)))
        delay = min(delay * 2, 5.0)


@dataclass
class Subscriber:
    """Follows ``task.finished`` on the SSE stream from the start of the run, resuming after
    the last event id it saw whenever the stream drops (node killed, Redis restarted)."""

    api: Api
    #: task id -> the distinct event ids of its task.finished.
    finished: dict[str, set[str]] = field(default_factory=dict)
    deliveries: int = 0
    duplicate_deliveries: int = 0
    connects: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    last_id: str | None = None
    _seen: set[str] = field(default_factory=set)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
                await self._stream()
            await asyncio.sleep(0.5)

    async def _stream(self) -> None:
        headers = self.api.headers(Accept="text/event-stream")
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        url = self.api.base + "/events/stream?types=task.finished"
        if self.last_id is None:
            url += "&after=0"  # from the retained start: nothing published before is missed
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=45)
        async with self.api.session.get(url, headers=headers, timeout=timeout) as r:
            if r.status != 200:
                self.refusals[f"{r.status} {(await r.text())[:120]}"] += 1
                return
            self.connects += 1
            frame: dict[str, str] = {}
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    self._dispatch(frame)
                    frame = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    frame[name] = frame.get(name, "") + value.removeprefix(" ")

    def _dispatch(self, frame: dict[str, str]) -> None:
        if "data" not in frame:
            return
        event = json.loads(frame["data"])
        if "id" in frame:
            self.last_id = frame["id"]
        self.deliveries += 1
        # The event's own id when the bus gives one (an outbox), else its stream position.
        data = event.get("data") or {}
        key = str(event.get("id") or data.get("event_id") or frame.get("id") or frame["data"])
        if key in self._seen:
            self.duplicate_deliveries += 1
            return
        self._seen.add(key)
        if event.get("type") == "task.finished" and "task_id" in data:
            self.finished.setdefault(data["task_id"], set()).add(key)
