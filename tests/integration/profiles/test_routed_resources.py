"""Volumes, migrations, snapshots, HA settings and maintenance through the server node land on
the node that runs their datacenter (checked in that node's actors), and answer 503 with
Retry-After at once while that node is down."""

from __future__ import annotations

import asyncio
import io
import re
import time
from typing import Any

import pytest

from cloudcore.app.client import BlockingClient
from cloudcore.app.console.shell import Console
from cloudcore.cluster import ClusterNode
from tests.integration.profiles.api import Answer, Api
from tests.integration.profiles.launcher import TOKEN, Cluster
from tests.integration.profiles.test_three_nodes import deploy, paths
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(180)


async def succeeded(api: Api, answer: Answer) -> dict[str, Any]:
    assert answer.status == 202, answer.body
    task = await api.finished(answer.body["id"])
    assert task["state"] == "SUCCEEDED", task
    return task


async def test_volumes_and_migrations_run_on_the_datacenters_node_and_503_while_it_is_down(
    cluster: Cluster, here: ClusterNode
) -> None:
    await cluster.start_all()
    await here.wait_for_nodes(["server", "node-dc1", "node-dc2"], 20)
    api = Api(cluster.api)
    try:
        vm = await deploy(api, "dc2", "with-disk")

        # Each datacenter's pool runs on its node; the server lists both.
        pools = await api.call("GET", "/storage-pools")
        assert pools.status == 200, pools.body
        assert {p["id"] for p in pools.body} == {"dc1-pool", "dc2-pool"}
        server_tree = paths(await here.tree("server", "/user"))
        assert not any(p.startswith("/user/storage/") for p in server_tree)

        # The console inspects another node's actor: named with @node, or found on it.
        inspected = await api.call(
            "GET", "/system/actors?path=/user/storage/dc2-pool&node=node-dc2"
        )
        assert inspected.status == 200, inspected.body
        assert (inspected.body["node"], inspected.body["class_name"]) == (
            "node-dc2",
            "StoragePoolActor",
        )
        said = await asyncio.to_thread(
            console,
            cluster.api,
            [
                "inspect /user/storage/dc1-pool @node-dc1",
                "inspect /user/storage/dc2-pool",
            ],
        )
        assert re.search(r"node:\s+node-dc1", said) and re.search(r"node:\s+node-dc2", said), said

        # A volume's whole life through the server, run by dc2's node.
        create = await api.call(
            "POST",
            "/volumes",
            {"name": "disk", "datacenter_id": "dc2", "size_gib": 1, "tenant_id": "demo"},
        )
        volume_id = (await succeeded(api, create))["subject"].removeprefix("volume/")
        dc2_tree = paths(await here.tree("node-dc2", "/user"))
        assert f"/user/storage/dc2-pool/{volume_id}" in dc2_tree
        assert not any(p.endswith(volume_id) for p in paths(await here.tree("node-dc1", "/user")))
        attach = await api.call("POST", f"/volumes/{volume_id}/attach", {"vm_id": vm["id"]})
        await succeeded(api, attach)
        assert (await api.call("GET", f"/volumes/{volume_id}")).body["state"] == "ATTACHED"
        await succeeded(
            api, await api.call("POST", f"/volumes/{volume_id}/extend", {"size_gib": 2})
        )
        await succeeded(api, await api.call("POST", f"/volumes/{volume_id}/detach"))
        await succeeded(api, await api.call("DELETE", f"/volumes/{volume_id}"))

        # A migration, an HA setting and a maintenance, each done by dc2's node.
        target = next(h for h in await _hosts(api, "dc2") if h != vm["host_id"])
        migrate = await api.call("POST", f"/vms/{vm['id']}/migrate", {"host_id": target})
        await succeeded(api, migrate)
        dc2_tree = paths(await here.tree("node-dc2", "/user"))
        assert f"/user/dc/dc2/{target}/{vm['id']}" in dc2_tree
        await succeeded(api, await api.call("POST", f"/vms/{vm['id']}/snapshot", {"name": "s1"}))
        listed = await api.call("GET", f"/vms/{vm['id']}/snapshots")  # asked of dc2's node
        assert listed.status == 200 and [s["name"] for s in listed.body] == ["s1"], listed.body
        ha = await api.call("POST", f"/vms/{vm['id']}/ha", {"ha": True, "priority": 3})
        assert ha.status == 200 and ha.body["spec"]["ha"] is True, ha.body
        maintain = await api.call("POST", f"/hosts/{vm['host_id']}/maintenance")
        await succeeded(api, maintain)

        # dc2's node killed: its volumes are refused at once, dc1's pool still answers.
        cluster.kill("node-dc2")
        await eventually(lambda: _is_down(api, "node-dc2"), timeout=10)
        started = time.monotonic()
        refused = await api.call(
            "POST", "/volumes", {"name": "late", "datacenter_id": "dc2", "size_gib": 1}
        )
        assert time.monotonic() - started < 1.0
        assert refused.status == 503, refused.body
        assert refused.body["error"]["code"] == "datacenter_unavailable"
        assert refused.headers["Retry-After"].isdigit()
        ha = await api.call("POST", f"/vms/{vm['id']}/ha", {"ha": False})
        assert ha.status == 503, ha.body
        left = await api.call("GET", "/storage-pools")
        assert [p["id"] for p in left.body] == ["dc1-pool"]
        other = await api.call(
            "POST", "/volumes", {"name": "fine", "datacenter_id": "dc1", "size_gib": 1}
        )
        await succeeded(api, other)
    finally:
        await api.close()


def console(api: str, commands: list[str]) -> str:
    """What the operator console prints for ``commands`` against the API at ``api``."""
    out = io.StringIO()
    with BlockingClient(api + "/api/v1", TOKEN) as client:
        shell = Console(client, stdout=out)
        for command in commands:
            shell.onecmd(command)
    return out.getvalue()


async def _hosts(api: Api, datacenter: str) -> list[str]:
    body = (await api.call("GET", f"/hosts?datacenter_id={datacenter}")).body
    return [h["id"] for h in body["items"]]


async def _is_down(api: Api, node: str) -> bool:
    return await api.node_status(node) == "down"
