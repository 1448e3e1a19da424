"""One server node and two remote-services nodes (dc1, dc2), as `cloudcore serve` processes on
PostgreSQL, Redis and RabbitMQ: every operation through the server lands on the node that runs
its datacenter; a datacenter whose node is killed answers 503 at once until its node is back,
and the other datacenter carries on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from cloudcore.cluster import ClusterNode
from cloudcore.runtime.introspection import ActorInfo
from tests.integration.profiles.api import Api
from tests.integration.profiles.launcher import Cluster
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(180)


def paths(tree: ActorInfo) -> set[str]:
    return {info.path for info in tree.walk()}


async def deploy(api: Api, dc: str, name: str) -> dict[str, Any]:
    answer = await api.deploy(dc, name)
    assert answer.status == 202, answer.body
    task = await api.finished(answer.body["id"])
    assert task["state"] == "SUCCEEDED", task
    return await api.vm(task["subject"].removeprefix("vm/"))


async def test_operations_reach_the_datacenters_node_and_a_killed_one_answers_503_until_back(
    cluster: Cluster, here: ClusterNode
) -> None:
    await cluster.start_all()
    await here.wait_for_nodes(["server", "node-dc1", "node-dc2"], 20)
    api = Api(cluster.api)
    try:
        vms = {
            dc: [await deploy(api, dc, f"{dc}-vm{i}") for i in range(2)] for dc in ("dc1", "dc2")
        }

        # Each VM's actor is on its datacenter's node, none on the other node or the server.
        trees = {n: paths(await here.tree(n, "/user")) for n in ("node-dc1", "node-dc2", "server")}
        for dc, other in (("dc1", "dc2"), ("dc2", "dc1")):
            for vm in vms[dc]:
                assert f"/user/dc/{dc}/{vm['host_id']}/{vm['id']}" in trees[f"node-{dc}"]
                assert not any(p.endswith(vm["id"]) for p in trees[f"node-{other}"])
        assert not any(p.startswith("/user/dc/") for p in trees["server"])

        # The server's API (the console's nodes and tree) shows every node.
        nodes = {n["id"]: n for n in (await api.call("GET", "/system/nodes")).body["items"]}
        assert nodes["server"]["info"]["profile"] == "server"
        assert nodes["server"]["info"]["datacenters"] == ""
        for dc in ("dc1", "dc2"):
            info = nodes[f"node-{dc}"]["info"]
            assert (info["profile"], info["datacenters"]) == ("remote-services", dc)
            assert float(info["cpu_percent"]) >= 0 and nodes[f"node-{dc}"]["started_at"]
        remote = await api.call("GET", "/system/tree?path=/user/dc&node=node-dc2")
        assert remote.status == 200
        assert vms["dc2"][0]["id"] in {i.path.rsplit("/", 1)[-1] for i in _infos(remote.body)}

        # Operated through the server, run on the datacenter's node.
        stop = await api.operate(vms["dc1"][0]["id"], "stop")
        assert stop.status == 202, stop.body
        assert (await api.finished(stop.body["id"]))["state"] == "SUCCEEDED"
        assert (await api.vm(vms["dc1"][0]["id"]))["state"] == "STOPPED"
        disabled = await api.call("POST", f"/hosts/{vms['dc2'][0]['host_id']}/disable")
        assert disabled.status == 200 and disabled.body["admin_state"] == "DISABLED"

        # kill -9 the dc1 node: dc1's operations are refused at once, dc2's go on.
        cluster.kill("node-dc1")
        await eventually(lambda: _is_down(api, "node-dc1"), timeout=10)
        tasks_before = await _task_count(api)
        refused, accepted = await asyncio.gather(
            _burst(api, [vm["id"] for vm in vms["dc1"]], "reboot", 20),
            _burst(api, [vm["id"] for vm in vms["dc2"]], "reboot", 20, sequential=True),
        )
        for answer, seconds in refused:
            assert answer.status == 503, answer.body
            assert answer.body["error"]["code"] == "datacenter_unavailable", answer.body
            assert answer.headers["Retry-After"].isdigit()
            assert seconds < 1.0  # at once, not after an ask's timeout
        for answer, _ in accepted:
            assert answer.status == 202, answer.body
            assert (await api.finished(answer.body["id"]))["state"] == "SUCCEEDED"
        assert await _task_count(api) == tasks_before + len(accepted)  # the 503s wrote nothing
        deploy_refused = await api.deploy("dc1", "refused")
        assert deploy_refused.status == 503

        # Back: it takes the lease once the dead process's has expired, and serves again. (A
        # simulated host is in the memory of the node's process: the restarted node's hosts
        # start empty, so the check is on a new VM.)
        await cluster.start("node-dc1")
        await cluster.wait_for_log("node-dc1", "lease.acquired", datacenter="dc1", timeout=20)
        after = await deploy(api, "dc1", "after")
        again = await api.operate(after["id"], "reboot")
        assert again.status == 202, again.body
        assert (await api.finished(again.body["id"]))["state"] == "SUCCEEDED"
        tree = paths(await here.tree("node-dc1", "/user"))
        assert f"/user/dc/dc1/{after['host_id']}/{after['id']}" in tree
    finally:
        await api.close()


def _infos(tree: dict[str, Any]) -> list[ActorInfo]:
    info = msgspec.convert(tree, ActorInfo)
    return list(info.walk())


async def _is_down(api: Api, node: str) -> bool:
    return await api.node_status(node) == "down"


async def _task_count(api: Api) -> int:
    count, cursor = 0, None
    while True:
        query = "?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.call("GET", "/tasks" + query)).body
        count += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return count


async def _burst(
    api: Api, vm_ids: list[str], operation: str, n: int, *, sequential: bool = False
) -> list[tuple[Any, float]]:
    """``n`` operations over ``vm_ids``; each answer with the seconds it took. Sequential: one
    VM's operations one after the other (each waited for), so none refuses the next."""
    out = []

    async def one(vm_id: str) -> tuple[Any, float]:
        started = time.monotonic()
        answer = await api.operate(vm_id, operation)
        return answer, time.monotonic() - started

    if not sequential:
        return list(await asyncio.gather(*(one(vm_ids[i % len(vm_ids)]) for i in range(n))))
    for i in range(n // 4):
        answer, seconds = await one(vm_ids[i % len(vm_ids)])
        if answer.status == 202:
            await api.finished(answer.body["id"])
        out.append((answer, seconds))
    return out
