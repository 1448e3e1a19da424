"""The actor system through the HTTP API: nodes, tree, inspect, tell, ask, restart, stop,
dead letters; admins and operators only."""

from __future__ import annotations

from typing import Any

import pytest

from cloudcore.runtime import Actor, Message
from tests.component.gateway.conftest import ApiClient

HOST = "/user/dc/dc1/dc1-h1"


class SystemApiProbe(Message, frozen=True, kw_only=True):
    n: int


class Echo(Actor[SystemApiProbe]):
    async def receive(self, message: SystemApiProbe) -> Any:
        return message.n


def _paths(node: dict[str, Any]) -> list[str]:
    return [node["path"], *(p for child in node["children"] for p in _paths(child))]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/system/nodes", None),
        ("GET", "/system/tree", None),
        ("GET", f"/system/actors?path={HOST}", None),
        ("GET", "/system/deadletters", None),
        ("POST", "/system/tell", {"path": HOST, "message": {"type": "GetHost"}}),
        ("POST", "/system/ask", {"path": HOST, "message": {"type": "GetHost"}}),
        ("POST", "/system/restart", {"path": HOST}),
        ("POST", "/system/stop", {"path": HOST}),
    ],
)
async def test_users_are_refused_every_system_endpoint(
    api: ApiClient, method: str, path: str, body: Any
) -> None:
    r = await api.call(method, path, "alice", body)
    assert r.status == 403, r.body
    assert r.error_code == "forbidden"
    assert api.system.tree(HOST).status == "running"


async def test_nodes_lists_this_node_on_the_local_transport(api: ApiClient) -> None:
    r = await api.call("GET", "/system/nodes", "operator")
    assert r.status == 200, r.body
    [node] = r.body["items"]
    assert node["id"] == api.system.node_id
    assert node["this"] is True
    assert node["status"] == "up"
    assert node["transport"] == "local"
    assert node["capabilities"] == dict(api.settings.node.capabilities)


async def test_tree_shows_the_datacenter_and_its_hosts(api: ApiClient) -> None:
    r = await api.call("GET", "/system/tree?path=/user/dc")
    assert r.status == 200, r.body
    paths = _paths(r.body)
    assert {"/user/dc/dc1", HOST, "/user/dc/dc1/dc1-h2"} <= set(paths)
    host = next(c for c in r.body["children"][0]["children"] if c["path"] == HOST)
    assert host["status"] == "running"
    assert host["processed"] >= 1
    assert {"mailbox_depth", "restarts", "class_name", "last_failure"} <= set(host)


async def test_tree_defaults_to_user_and_404s_an_unknown_path(api: ApiClient) -> None:
    r = await api.call("GET", "/system/tree")
    assert r.status == 200 and r.body["path"] == "/user"
    missing = await api.call("GET", "/system/tree?path=/user/nope")
    assert missing.status == 404 and "/user/nope" in missing.body["error"]["message"]


async def test_inspect_an_actor_names_its_class_and_children(api: ApiClient) -> None:
    r = await api.call("GET", "/system/actors?path=/user/dc/dc1", "operator")
    assert r.status == 200, r.body
    assert r.body["path"] == "/user/dc/dc1"
    assert r.body["class_name"] == "DatacenterActor"
    assert {"dc1-h1", "dc1-h2"} <= set(r.body["children"])
    assert r.body["status"] == "running"
    missing = await api.call("GET", "/system/actors?path=/user/dc/dc9")
    assert missing.status == 404


@pytest.mark.parametrize("action", ["ask", "tell"])
async def test_a_message_the_actor_does_not_handle_is_422_before_delivery(
    api: ApiClient, action: str
) -> None:
    scheduler = "/user/dc/dc1/scheduler"
    body = {"path": scheduler, "message": {"type": "GetHost"}}
    r = await api.call("POST", f"/system/{action}", "admin", body)
    assert r.status == 422, r.body
    assert r.body["error"]["code"] == "message_not_accepted"
    assert "SchedulerActor does not handle GetHost" in r.body["error"]["message"]
    accepted = r.body["error"]["details"]["accepted"]
    assert accepted and "GetHost" not in accepted
    info = await api.call("GET", f"/system/actors?path={scheduler}", "admin")
    assert info.body["restarts"] == 0 and info.body["last_failure"] is None


async def test_ask_get_host_returns_the_host(api: ApiClient) -> None:
    r = await api.call(
        "POST", "/system/ask", "operator", {"path": HOST, "message": {"type": "GetHost"}}
    )
    assert r.status == 200, r.body
    assert r.body["reply_type"] == "Host"
    assert r.body["reply"]["id"] == "dc1-h1"
    assert r.body["reply"]["datacenter_id"] == "dc1"


async def test_ask_an_unknown_actor_is_404(api: ApiClient) -> None:
    r = await api.call(
        "POST", "/system/ask", "admin", {"path": "/user/x", "message": {"type": "GetHost"}}
    )
    assert r.status == 404 and r.error_code == "not_found"


async def test_an_unknown_message_type_is_422_naming_it_and_close_matches(api: ApiClient) -> None:
    r = await api.call(
        "POST", "/system/ask", "admin", {"path": HOST, "message": {"type": "GetHots"}}
    )
    assert r.status == 422, r.body
    assert r.error_code == "unknown_message_type"
    assert "'GetHots'" in r.body["error"]["message"]
    assert "GetHost" in r.body["error"]["details"]["close_matches"]


async def test_a_field_the_message_lacks_is_422_naming_it(api: ApiClient) -> None:
    unknown = await api.call(
        "POST", "/system/tell", "admin", {"path": HOST, "message": {"type": "GetHost", "hst": 1}}
    )
    assert unknown.status == 422, unknown.body
    assert "'hst'" in unknown.body["error"]["message"]
    assert unknown.body["error"]["details"]["field"] == "message.hst"
    bad = await api.call(
        "POST", "/system/tell", "admin", {"path": HOST, "message": {"type": "Forget", "vm_id": 3}}
    )
    assert bad.status == 422, bad.body
    assert "message.vm_id" in bad.body["error"]["message"]


async def test_tell_is_202_and_the_actor_handles_it(api: ApiClient) -> None:
    before = api.system.tree(HOST).processed
    r = await api.call(
        "POST", "/system/tell", "operator", {"path": HOST, "message": {"type": "GetHost"}}
    )
    assert r.status == 202, r.body
    assert r.body == {"path": HOST, "message_type": "GetHost"}
    # An ask queues behind the tell: once it is answered, the tell was handled.
    await api.call(
        "POST", "/system/ask", "operator", {"path": HOST, "message": {"type": "GetHost"}}
    )
    assert api.system.tree(HOST).processed >= before + 2


async def test_an_error_the_actor_raises_is_the_reply_error(api: ApiClient) -> None:
    place = {"type": "PlaceVM", "vm_id": "vm-nope", "expected_version": 0}
    r = await api.call(
        "POST", "/system/ask", "admin", {"path": "/user/dc/dc1/scheduler", "message": place}
    )
    assert r.status == 404, r.body
    assert "vm-nope" in r.body["error"]["message"]


@pytest.mark.parametrize("path", ["/", "/user", "/system"])
async def test_a_guardian_takes_no_message_and_is_not_failed_by_one(
    api: ApiClient, path: str
) -> None:
    r = await api.call(
        "POST", "/system/ask", "admin", {"path": path, "message": {"type": "GetHost"}}
    )
    assert r.status == 422 and r.error_code == "message_not_accepted", r.body
    assert "accepts none" in r.body["error"]["message"]
    assert api.system.tree(path).restarts == 0


async def test_restart_gives_a_fresh_instance_that_answers(api: ApiClient) -> None:
    r = await api.call("POST", "/system/restart", "operator", {"path": HOST})
    assert r.status == 200, r.body
    assert r.body["restarts"] == 1 and r.body["status"] == "running"
    after = await api.call(
        "POST", "/system/ask", "operator", {"path": HOST, "message": {"type": "GetHost"}}
    )
    assert after.status == 200 and after.body["reply"]["id"] == "dc1-h1"


@pytest.mark.parametrize("path", ["/", "/user", "/system", "/system/cluster"])
async def test_restart_and_stop_refuse_paths_outside_user(api: ApiClient, path: str) -> None:
    for verb in ("restart", "stop"):
        r = await api.call("POST", f"/system/{verb}", "admin", {"path": path})
        assert r.status == 403, r.body
        assert "/user" in r.body["error"]["message"]
    assert api.system.tree("/user").status == "running"


async def test_stop_stops_the_actor_and_later_mail_is_a_dead_letter(api: ApiClient) -> None:
    ref = api.system.spawn(Echo, name="echo")
    r = await api.call("POST", "/system/stop", "operator", {"path": "/user/echo"})
    assert r.status == 200, r.body
    assert r.body == {"path": "/user/echo", "status": "stopped"}
    assert (await api.call("GET", "/system/actors?path=/user/echo")).status == 404
    ref.tell(SystemApiProbe(n=7))
    letters = await api.call("GET", "/system/deadletters?limit=5", "operator")
    assert letters.status == 200, letters.body
    last = letters.body["items"][-1]
    assert last["recipient"] == "/user/echo"
    assert last["message_type"] == "SystemApiProbe"
    assert last["reason"] == "stopped"
    assert last["time"].endswith("Z")
    assert letters.body["total"] >= 1


async def test_ask_converts_fields_and_encodes_a_plain_reply(api: ApiClient) -> None:
    api.system.spawn(Echo, name="echo")
    r = await api.call(
        "POST",
        "/system/ask",
        "admin",
        {"path": "/user/echo", "message": {"type": "SystemApiProbe", "n": 41}},
    )
    assert r.status == 200, r.body
    assert r.body == {"path": "/user/echo", "reply_type": "int", "reply": 41}
    missing = await api.call(
        "POST",
        "/system/ask",
        "admin",
        {"path": "/user/echo", "message": {"type": "SystemApiProbe"}},
    )
    assert missing.status == 422 and "`n`" in missing.body["error"]["message"]
