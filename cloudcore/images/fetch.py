"""Fetching an image from an HTTP(S) URL into a template's partial file, resuming after drops.

The body is streamed to ``uploads/<template>.part`` in 1 MiB chunks (never whole in memory).
A connection that drops (or stalls past the read timeout) is retried after a backoff, asking
for the rest with ``Range: bytes=N-`` from what is fsynced; a server that answers 206 with that
offset is appended to, one that answers 200 (no ranges) is read again from byte 0. The attempts
are bounded; running out raises :class:`FetchInterrupted` with the partial file kept, so a later
import of the same URL resumes. A refusal (a status other than 200/206, a size other than the
declared one or beyond the maximum) raises ImageRejected: the caller discards the partial file.

Only ``http`` and ``https``: :func:`check_url` refuses ``file://`` and every other scheme (the
node would read its own disk for the tenant), and credentials in the URL (they would be stored
in the template's ``source`` and logged).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from cloudcore.errors import BackendUnavailable, ImageRejected, InvalidRequest
from cloudcore.images.repository import ImageRepository, UploadFile

__all__ = ["FetchInterrupted", "FetchLimits", "Fetched", "check_url", "fetch"]

_CHUNK = 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

ByteSink = Callable[[int, int | None], Awaitable[None]]
SizeSink = Callable[[int], Awaitable[None]]


class FetchInterrupted(BackendUnavailable):
    """The connection kept dropping: the attempts ran out with ``held`` bytes kept."""

    def __init__(self, message: str, held: int) -> None:
        super().__init__(message)
        self.held = held


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_bytes: int
    attempts: int = 5
    read_timeout: float = 60.0
    backoff: float = 0.2  # seconds before the second attempt, doubled each time, at most 5 s


@dataclass(frozen=True, slots=True)
class Fetched:
    size: int
    sha256: str
    attempts: int


def check_url(url: str) -> URL:
    """The parsed URL, or InvalidRequest naming the field ``url``."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise InvalidRequest(f"url: {url!r} is not a URL ({exc})") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequest(
            f"url: the scheme {parsed.scheme or '(none)'!r} is refused; only http and https"
        )
    if not parsed.host:
        raise InvalidRequest("url: names no host")
    if parsed.user is not None or parsed.password is not None:
        raise InvalidRequest("url: credentials in a URL would be stored and logged; refused")
    return parsed


async def fetch(
    url: str,
    repo: ImageRepository,
    template_id: str,
    *,
    size: int | None,
    limits: FetchLimits,
    progress: ByteSink | None = None,
    sized: SizeSink | None = None,
) -> Fetched:
    """Download ``url`` into the partial file of ``template_id``, resuming from what it holds.
    ``sized`` hears the image's size, when ``size`` was not given, once the server has said it
    and before any byte is written (it may refuse by raising)."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=limits.read_timeout)
    held = await repo.partial_size(template_id)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        for attempt in range(1, limits.attempts + 1):
            try:
                upload = await _one_attempt(
                    session, url, repo, template_id, held, size, limits, (progress, sized)
                )
                return Fetched(upload.size, upload.hexdigest(), attempt)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError):
                held = await repo.partial_size(template_id)
                if attempt == limits.attempts:
                    raise FetchInterrupted(
                        f"the connection to {URL(url).host} dropped {attempt} times; "
                        f"{held} bytes kept: ask again to resume",
                        held,
                    ) from None
                await asyncio.sleep(min(limits.backoff * 2 ** (attempt - 1), 5.0))
    raise AssertionError("unreachable")


async def _one_attempt(
    session: aiohttp.ClientSession,
    url: str,
    repo: ImageRepository,
    template_id: str,
    held: int,
    size: int | None,
    limits: FetchLimits,
    sinks: tuple[ByteSink | None, SizeSink | None],
) -> UploadFile:
    # identity: the bytes as stored, so sizes and offsets count the image's own bytes.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={held}-"} if held else {})}
    async with session.get(url, headers=headers) as response:
        start, total = _where(response, held)
        if total is not None and size is not None and total != size:
            raise ImageRejected(f"size: the server has {total} bytes, the declared {size}")
        expected = size if size is not None else total
        if expected is not None and expected > limits.max_bytes:
            raise ImageRejected(f"size: {expected} bytes is beyond the maximum {limits.max_bytes}")
        cap = expected if expected is not None else limits.max_bytes
        progress, sized = sinks
        if size is None and expected is not None and sized is not None:
            await sized(expected)
        upload = await repo.open_upload(template_id, start)
        try:
            if start == total:  # everything was fetched already; only the checks are left
                return upload
            async for chunk in response.content.iter_chunked(_CHUNK):
                if upload.size + len(chunk) > cap:
                    raise ImageRejected(f"size: the server sent more than {cap} bytes")
                await upload.write(chunk)
                if progress is not None:
                    await progress(upload.size, expected)
        finally:
            await asyncio.shield(upload.close())
    if expected is not None and upload.size != expected:
        # The body ended early without an error (no Content-Length): a dropped connection.
        raise aiohttp.ClientPayloadError(f"the body ended at byte {upload.size} of {expected}")
    return upload


def _where(response: aiohttp.ClientResponse, held: int) -> tuple[int, int | None]:
    """(the offset the body starts at, the whole image's size if the server says it)."""
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and held:
        found = _CONTENT_RANGE.match(content_range)
        if found is None or int(found[1]) != held:
            raise ImageRejected(
                f"url: asked for bytes {held}-, the server answered {content_range!r}"
            )
        return held, None if found[3] == "*" else int(found[3])
    if response.status == 416 and held and content_range == f"bytes */{held}":
        return held, held  # asked from the end: the partial file is the whole image
    if response.status != 200:
        if response.status >= 500:
            raise aiohttp.ClientConnectionError(f"the server answered {response.status}")
        raise ImageRejected(f"url: the server answered {response.status} {response.reason}")
    return 0, response.content_length
