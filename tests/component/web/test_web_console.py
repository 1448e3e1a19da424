"""The web console without a browser: login and its cookie, CSRF, pages for each role, actions
and their errors as the API words them. The browser itself: tests/integration/web."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.component.gateway.conftest import ApiClient
from tests.component.gateway.test_vms_api import running_vm


def _origin(api: ApiClient) -> str:
    return api.base.removesuffix("/api/v1")


async def _login(api: ApiClient, who: str) -> tuple[aiohttp.ClientSession, str]:
    """A browser-like session logged in as ``who``, and its CSRF token."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    origin = _origin(api)
    async with session.post(
        origin + "/ui/login",
        data={"token": api.tokens[who]},
        headers={"Origin": origin},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/vms"
    async with session.get(origin + "/ui/vms") as r:
        assert r.status == 200
        found = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert found is not None
    return session, found.group(1)


async def test_login_sets_an_httponly_strict_cookie_holding_no_token(api: ApiClient) -> None:
    origin = _origin(api)
    async with (
        aiohttp.ClientSession() as raw,
        raw.post(
            origin + "/ui/login",
            data={"token": api.tokens["alice"]},
            headers={"Origin": origin},
            allow_redirects=False,
        ) as r,
    ):
        assert r.status == 303
        cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure under TLS
    assert api.tokens["alice"] not in cookie


async def test_a_wrong_token_is_refused_and_pages_need_a_login(api: ApiClient) -> None:
    origin = _origin(api)
    async with aiohttp.ClientSession() as raw:
        async with raw.post(
            origin + "/ui/login", data={"token": "cc_wrong"}, allow_redirects=False
        ) as r:
            assert r.status == 401 and "unknown, revoked or expired" in await r.text()
        async with raw.get(origin + "/ui/vms", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/ui/login"


async def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(
    api: ApiClient,
) -> None:
    session, csrf = await _login(api, "alice")
    origin = _origin(api)
    vm_id = await running_vm(api)
    async with session:
        async with session.post(origin + f"/ui/vms/{vm_id}/stop", data={}) as r:
            assert r.status == 403
        async with session.post(
            origin + f"/ui/vms/{vm_id}/stop",
            data={"csrf": csrf},
            headers={"Origin": "http://evil.example"},
        ) as r:
            assert r.status == 403
        vm = (await api.call("GET", f"/vms/{vm_id}", "alice")).body
        assert vm["state"] == "RUNNING"  # nothing was done
        async with session.post(
            origin + f"/ui/vms/{vm_id}/stop",
            headers={"X-CSRF-Token": csrf, "HX-Request": "true", "Origin": origin},
        ) as r:
            assert r.status == 200 and "Stop of VM web started" in await r.text()


async def test_an_illegal_action_is_explained_with_the_apis_409(api: ApiClient) -> None:
    session, csrf = await _login(api, "alice")
    vm_id = await running_vm(api)
    async with (
        session,
        session.post(
            _origin(api) + f"/ui/vms/{vm_id}/resume",
            headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
        ) as r,
    ):
        text = await r.text()
    assert r.status == 409
    assert 'role="alert"' in text and "RUNNING" in text and "illegal_transition" in text


async def test_a_user_sees_its_own_vms_and_not_the_operator_pages(api: ApiClient) -> None:
    await running_vm(api, "bob", name="bobs")
    await running_vm(api, "alice", name="alices")
    session, _ = await _login(api, "alice")
    origin = _origin(api)
    async with session:
        async with session.get(origin + "/ui/vms") as r:
            text = await r.text()
        assert "alices" in text and "bobs" not in text
        assert 'href="/ui/actors"' not in text
        async with session.get(origin + "/ui/actors") as r:
            assert r.status == 403
        for path in ("/ui/tasks", "/ui/events", "/ui/quotas"):
            async with session.get(origin + path) as r:
                assert r.status == 200, path
                assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")


@pytest.mark.parametrize("path", ["/ui/datacenters", "/ui/hosts", "/ui/actors", "/ui/dead-letters"])
async def test_an_operator_sees_the_operator_pages(api: ApiClient, path: str) -> None:
    session, _ = await _login(api, "operator")
    async with session, session.get(_origin(api) + path) as r:
        text = await r.text()
    assert r.status == 200
    if path == "/ui/actors":
        assert "DatacenterActor" in text and "Mailbox" in text and "Restarts" in text
    if path == "/ui/hosts":
        assert "<meter" in text and "HEALTHY" in text


async def test_logout_ends_the_session(api: ApiClient) -> None:
    session, csrf = await _login(api, "alice")
    origin = _origin(api)
    async with session:
        async with session.post(
            origin + "/ui/logout", data={"csrf": csrf}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/ui/login"
        async with session.get(origin + "/ui/vms", allow_redirects=False) as r:
            assert r.status == 303
