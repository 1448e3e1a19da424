"""Template conversions and network changes through the server node reach the node that runs
their datacenter (its converter claims the conversion at once; its DHCP server's hosts file is
rewritten before the API answers), and answer 503 with Retry-After at once, nothing written,
while that node is down."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import Any

import pytest

from cloudcore.cluster import ClusterNode
from tests.component.gateway.test_images_api import qcow2_image
from tests.integration.profiles.api import Answer, Api
from tests.integration.profiles.launcher import Cluster
from tests.integration.profiles.test_three_nodes import deploy
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(180)

#: qemu-img that stalls converting to vdi (its scratch file half written, 40% said), else the
#: real one: a conversion to abort midway.
STALLING = """#!/bin/sh
if [ "$1" = convert ]; then
  for last; do :; done
  case "$last" in *.vdi)
    printf 'half a disk' > "$last"
    printf '    (0.00/100%%)\\r    (40.00/100%%)\\r'
    exec sleep 120 ;;
  esac
fi
exec qemu-img "$@"
"""


async def _upload(api: Api, template_id: str, image: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(image).hexdigest()
    url = f"{api.base}/templates/{template_id}/image?size={len(image)}&sha256={digest}"
    headers = {"Content-Type": "application/octet-stream"}
    async with api.session.put(url, data=io.BytesIO(image), headers=headers) as reply:
        body: dict[str, Any] = await reply.json()
        assert reply.status == 200, body
        return body


async def _down(api: Api, node: str) -> bool:
    return await api.node_status(node) == "down"


def _refused_at_once(answer: Answer, started: float) -> None:
    assert time.monotonic() - started < 1.0
    assert answer.status == 503, answer.body
    assert answer.body["error"]["code"] == "datacenter_unavailable"
    assert answer.headers["Retry-After"].isdigit()


async def test_a_conversion_is_claimed_by_the_datacenters_node_at_once_and_503_while_it_is_down(
    cluster: Cluster, here: ClusterNode, tmp_path: Path
) -> None:
    stalling = tmp_path / "qemu-img"
    stalling.write_text(STALLING)
    stalling.chmod(0o755)
    cluster.node_env["node-dc2"] = {"CLOUDCORE_IMAGES__QEMU_IMG": str(stalling)}
    await cluster.start_all()
    await here.wait_for_nodes(["server", "node-dc1", "node-dc2"], 20)
    api = Api(cluster.api)
    try:
        made = await api.call(
            "POST", "/templates", {"name": "golden", "datacenter_id": "dc2", "tenant_id": "demo"}
        )
        assert made.status == 201, made.body
        template_id = made.body["id"]
        template = await _upload(api, template_id, qcow2_image(tmp_path).read_bytes())
        assert template["state"] == "AVAILABLE", template

        offset = cluster.log_size("node-dc2")
        asked = await api.call("POST", f"/templates/{template_id}/conversions", {"format": "raw"})
        assert asked.status == 202, asked.body
        # Claimed through dc2's node before the answer (its own claim runs once a second).
        assert asked.body["state"] in ("RUNNING", "SUCCEEDED"), asked.body
        await cluster.wait_for_log(
            "node-dc2", "template.convert_routed", offset, 10, task_id=asked.body["id"]
        )
        task = await api.finished(asked.body["id"])
        assert task["state"] == "SUCCEEDED", task
        converted = (await api.call("GET", f"/templates/{template_id}")).body
        assert set(converted["formats"]) == {"qcow2", "raw"}, converted
        # The server uploaded it, dc2's node converted it: one library, shared.
        objects = cluster.root / "images" / "dc2" / "objects"
        assert (objects / converted["formats"]["raw"]).is_file()
        # dc2's node clones it for a VM there; the server sees that clone and keeps the template.
        made = await api.call(
            "POST",
            "/vms",
            {
                "name": "from-golden",
                "datacenter_id": "dc2",
                "template_id": template_id,
                "cpus": 1,
                "memory_mib": 128,
                "tenant_id": "demo",
            },
        )
        assert made.status == 202, made.body
        assert (await api.finished(made.body["id"]))["state"] == "SUCCEEDED"
        vm_id = made.body["subject"].removeprefix("vm/")
        kept = await api.call("DELETE", f"/templates/{template_id}")
        assert kept.status == 409 and vm_id in kept.body["error"]["message"], kept.body

        # A conversion running on dc2's node is aborted through the server, by dc2's node.
        stalled = await api.call("POST", f"/templates/{template_id}/conversions", {"format": "vdi"})
        assert stalled.status == 202, stalled.body

        async def midway() -> bool:
            task = (await api.call("GET", f"/tasks/{stalled.body['id']}")).body
            return bool(task["state"] == "RUNNING" and task["progress"] > 0)

        await eventually(midway, timeout=20)
        aborted = await api.call("POST", f"/tasks/{stalled.body['id']}/abort", {"reason": "test"})
        assert aborted.status == 202, aborted.body
        assert aborted.body["state"] == "CANCELLED", aborted.body
        assert not list((cluster.root / "images" / "dc2" / "tmp" / "node-dc2").iterdir())
        after = (await api.call("GET", f"/templates/{template_id}")).body
        assert after["state"] == "AVAILABLE" and "vdi" not in after["formats"], after

        cluster.kill("node-dc2")
        await eventually(lambda: _down(api, "node-dc2"), timeout=10)
        started = time.monotonic()
        refused = await api.call(
            "POST", f"/templates/{template_id}/conversions", {"format": "vmdk"}
        )
        _refused_at_once(refused, started)
        after = (await api.call("GET", f"/templates/{template_id}")).body
        assert after["state"] == "AVAILABLE", after  # nothing written
        pending = await api.call("GET", f"/tasks?subject=template/{template_id}")
        assert pending.status == 200, pending.body
        assert all(t["state"] != "PENDING" for t in pending.body["items"]), pending.body

        # A shared template's conversion goes to a datacenter whose node is up: dc1's.
        shared = await api.call("POST", "/templates", {"name": "everywhere", "tenant_id": None})
        assert shared.status == 201, shared.body
        image = qcow2_image(tmp_path, "shared.qcow2", seed=2).read_bytes()
        await _upload(api, shared.body["id"], image)
        offset = cluster.log_size("node-dc1")
        asked = await api.call(
            "POST", f"/templates/{shared.body['id']}/conversions", {"format": "raw"}
        )
        assert asked.status == 202, asked.body
        assert asked.body["state"] in ("RUNNING", "SUCCEEDED"), asked.body
        await cluster.wait_for_log(
            "node-dc1", "template.convert_routed", offset, 10, task_id=asked.body["id"]
        )
        assert (await api.finished(asked.body["id"]))["state"] == "SUCCEEDED"
    finally:
        await api.close()


async def test_network_changes_reload_dhcp_on_the_datacenters_node_and_503_while_it_is_down(
    cluster: Cluster, here: ClusterNode
) -> None:
    cluster.dhcp = True
    await cluster.start_all()
    await here.wait_for_nodes(["server", "node-dc1", "node-dc2"], 20)
    api = Api(cluster.api)
    try:
        vm = await deploy(api, "dc2", "nic-holder")
        made = await api.call(
            "POST",
            "/networks",
            {
                "name": "back",
                "datacenter_id": "dc2",
                "cidr": "10.77.0.0/24",
                "bridge": "ccnone0",  # no such bridge: dnsmasq retries; its hosts file is kept
                "tenant_id": "demo",
            },
        )
        assert made.status == 201, made.body
        network_id = made.body["id"]
        hosts = cluster.root / "node-dc2" / "dhcp" / network_id / "hosts"
        assert hosts.is_file()  # served by dc2's node before the answer
        assert not (cluster.root / "node-dc1" / "dhcp" / network_id).exists()

        offset = cluster.log_size("node-dc2")
        added = await api.call("POST", f"/vms/{vm['id']}/nics", {"network_id": network_id})
        assert added.status == 201, added.body
        mac = added.body["mac"]
        assert f"{mac},{added.body['address']}" in hosts.read_text().split()  # no wait
        await cluster.wait_for_log(
            "node-dc2", "network.change_routed", offset, 10, network_id=network_id
        )
        removed = await api.call("DELETE", f"/vms/{vm['id']}/nics/{mac}")
        assert removed.status == 204, removed.body
        assert mac not in hosts.read_text()

        cluster.kill("node-dc2")
        await eventually(lambda: _down(api, "node-dc2"), timeout=10)
        started = time.monotonic()
        refused = await api.call(
            "POST", "/networks", {"name": "late", "datacenter_id": "dc2", "cidr": "10.78.0.0/24"}
        )
        _refused_at_once(refused, started)
        listed = await api.call("GET", "/networks?datacenter_id=dc2")
        assert [n["name"] for n in listed.body["items"]] == ["back"]  # nothing written
        started = time.monotonic()
        nic = await api.call("POST", f"/vms/{vm['id']}/nics", {"network_id": network_id})
        _refused_at_once(nic, started)
        assert (await api.call("GET", f"/vms/{vm['id']}/nics")).body == []

        other = await api.call(
            "POST", "/networks", {"name": "fine", "datacenter_id": "dc1", "cidr": "10.79.0.0/24"}
        )
        assert other.status == 201, other.body  # dc1's node is unaffected
    finally:
        await api.close()
