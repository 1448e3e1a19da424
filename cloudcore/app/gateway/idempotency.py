"""``Idempotency-Key``: a POST sent again with the same key by the same user gets the first
answer (status, body, Location) instead of running again.

The first attempt holds the key in the store (:meth:`Store.claim_idempotency_key`); a create
records its task against the key in the create's own transaction, so a retry after a crash that
cut the answer off still finds what was made and answers with it. Once answered, the answer is
stored. An attempt that fails (a 4xx or 5xx) lets the key go, so a retry runs again; when the
store cannot take that release (it is down: often why the attempt failed), it is tried again in
the background until it goes through, else a retry would wait out the rest of the lease. A second
attempt while the first is running waits for it (up to the lease); a request that differs from
the first under the same key is a 409 naming the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from cloudcore.app.gateway.auth import Principal
from cloudcore.app.gateway.context import GATEWAY
from cloudcore.app.gateway.errors import ApiError
from cloudcore.errors import CloudcoreError, NotFound, describe
from cloudcore.logging import get_logger
from cloudcore.store import Store
from cloudcore.store.records import IdempotencyKey, Task

__all__ = ["HEADER", "MAX_KEY", "idempotent"]

HEADER = "Idempotency-Key"
MAX_KEY = 255
_POLL = (0.02, 0.5)  # first and longest pause between looks at a key held on another node
_RELEASE_BACKOFF = (0.1, 2.0)  # first and longest pause between tries of a failed release
_log = get_logger("cloudcore.app.gateway.idempotency")

# Attempts running on this node, by (user, key): a second attempt awaits the first's end.
_running: dict[tuple[str, str], asyncio.Event] = {}
# Releases tried again in the background (referenced so that they are not collected).
_releasing: set[asyncio.Task[None]] = set()

Respond = Callable[[IdempotencyKey | None], Awaitable[web.StreamResponse]]


def _fingerprint(request: web.Request, body: bytes) -> str:
    digest = hashlib.sha256(f"{request.method} {request.path_qs}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _key_of(request: web.Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY:
        raise ApiError(
            422,
            "invalid_header",
            f"the {HEADER} header must be 1 to {MAX_KEY} characters",
            {"header": HEADER},
        )
    return key


async def idempotent(
    request: web.Request, principal: Principal, body: bytes, respond: Respond
) -> web.StreamResponse:
    """Answer ``request`` through ``respond`` once per key (``respond(None)`` without one)."""
    key = _key_of(request)
    if key is None:
        return await respond(None)
    gateway = request.app[GATEWAY]
    settings, store = gateway.settings.api, gateway.store
    fingerprint = _fingerprint(request, body)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.idempotency_lease_seconds
    pause = _POLL[0]
    while True:
        claim, held = await store.claim_idempotency_key(
            principal.user_id,
            key,
            fingerprint,
            ttl=settings.idempotency_key_seconds,
            lease=settings.idempotency_lease_seconds,
        )
        if claim.fingerprint != fingerprint:
            raise ApiError(
                409,
                "idempotency_key_reused",
                f"{HEADER} {key!r} was sent with a different request: use a new key",
                {"header": HEADER, "key": key},
            )
        if held:
            return await _run(request, claim, respond)
        running = _running.get((claim.principal, key))
        # Once the create has committed (its task is recorded against the key), its task is the
        # answer, even while the first attempt is still writing its own (a slow node).
        if running is None or claim.task_id is not None:
            replay = await _replay(request, claim)
            if replay is not None:
                return replay
        if loop.time() >= deadline:
            raise ApiError(
                409,
                "idempotency_key_in_use",
                f"a request with {HEADER} {key!r} is still running: retry later",
                {"header": HEADER, "key": key},
            )
        if running is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.wait(), deadline - loop.time())
        else:  # held on another node, or by an attempt that died: look again
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL[1])


async def _run(request: web.Request, claim: IdempotencyKey, respond: Respond) -> web.StreamResponse:
    store = request.app[GATEWAY].store
    slot = (claim.principal, claim.key)
    done = _running[slot] = asyncio.Event()
    answered = False
    try:
        response = await respond(claim)
        if isinstance(response, web.Response) and response.status < 400:
            body = response.body if isinstance(response.body, bytes) else b""
            answered = await store.answer_idempotency_key(
                claim,
                status=response.status,
                location=response.headers.get("Location"),
                body=body.decode(),
            )
        return response
    finally:
        if not answered:  # failed, or nothing to replay: a retry runs again
            lease = request.app[GATEWAY].settings.api.idempotency_lease_seconds
            await asyncio.shield(_release(store, claim, lease))
        if _running.get(slot) is done:
            del _running[slot]
        done.set()


async def _release(store: Store, claim: IdempotencyKey, lease: float) -> None:
    """Let the key go now; if the store cannot say yes now, keep trying in the background
    (within the lease, after which the key is free anyway)."""
    try:
        await store.release_idempotency_key(claim)
    except CloudcoreError as exc:
        if not exc.retryable:
            raise
        task = asyncio.create_task(_release_later(store, claim, lease))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)


async def _release_later(store: Store, claim: IdempotencyKey, lease: float) -> None:
    loop = asyncio.get_running_loop()
    give_up, pause = loop.time() + lease, _RELEASE_BACKOFF[0]
    while loop.time() + pause < give_up:
        await asyncio.sleep(pause)
        try:
            await store.release_idempotency_key(claim)
            return
        except CloudcoreError as exc:
            if not exc.retryable:
                _log.warning("idempotency.release_failed", key=claim.key, error=describe(exc))
                return
        pause = min(pause * 2, _RELEASE_BACKOFF[1])


async def _replay(request: web.Request, claim: IdempotencyKey) -> web.Response | None:
    """The first answer again, or None if there is none yet."""
    headers = {HEADER: claim.key, "Idempotent-Replayed": "true"}
    if claim.status is not None:
        if claim.location is not None:
            headers["Location"] = claim.location
        return web.Response(
            status=claim.status,
            body=(claim.body or "").encode(),
            headers=headers,
            content_type="application/json",
        )
    if claim.task_id is None:
        return None
    # The create committed but its answer was cut off (a crash): answer from its task.
    store = request.app[GATEWAY].store
    try:
        task = await store.get(Task, claim.task_id)
    except NotFound:
        return None
    from cloudcore.app.gateway.tasks import task_view  # tasks imports api, which imports us

    headers["Location"] = f"/api/v1/tasks/{task.id}"
    return web.Response(
        status=202,
        body=msgspec.json.encode(await task_view(store, task)),
        headers=headers,
        content_type="application/json",
    )
