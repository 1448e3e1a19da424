"""GET /metrics: Prometheus text with request latency, actors, task outcomes, VMs and hosts."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cloudcore.app.gateway.routes.metrics import on_loopback
from cloudcore.store.records import VM, Host, OutboxEvent
from tests.component.gateway.conftest import ApiClient

WEB = {"name": "web", "datacenter_id": "dc1", "cpus": 1, "memory_mib": 256}


async def scrape(api: ApiClient, path: str = "/metrics") -> dict[str, list[Sample]]:
    """The samples of a scrape by metric family name (without a token, as Prometheus does)."""
    root = api.base.removesuffix("/api/v1")
    async with api.session.get(root + path) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


async def scrape_until(api: ApiClient, ready: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Scrape until ``ready(families)``: task.finished is published just after the task's
    waiters are told, so the counter may lag the task by a moment."""
    async with asyncio.timeout(timeout):
        while True:
            families = await scrape(api)
            if ready(families):
                return families
            await asyncio.sleep(0.05)


async def test_a_deployed_vm_shows_in_requests_tasks_vms_hosts_and_actors(
    api: ApiClient,
) -> None:
    created = await api.call("POST", "/vms", "alice", WEB)
    assert created.status == 202, created.body
    task = await api.wait_task(created.body["id"])
    assert task.state == "SUCCEEDED", task.error

    def deploy_counted(families: dict[str, list[Sample]]) -> bool:
        return any(
            s.labels == {"kind": "vm.deploy", "state": "SUCCEEDED"} and s.value >= 1
            for s in families.get("cloudcore_tasks_finished", [])
        )

    m = await scrape_until(api, deploy_counted)

    latency = m["cloudcore_http_request_duration_seconds"]
    count = value(
        latency,
        "cloudcore_http_request_duration_seconds_count",
        route="/api/v1/vms",
        method="POST",
        status="202",
    )
    assert count == 1
    assert value(m["cloudcore_tasks_finished"], "cloudcore_tasks_finished_total",
                 kind="vm.deploy", state="SUCCEEDED") == 1  # fmt: skip
    assert value(m["cloudcore_vms"], "cloudcore_vms", state="RUNNING") == 1
    assert value(m["cloudcore_vms"], "cloudcore_vms", state="DELETED") == 0
    health = await api.store.count_by(Host, "health")
    shown = {s.labels["health"]: s.value for s in m["cloudcore_hosts"]}
    assert sum(shown.values()) == 2 == sum(health.values())
    assert all(shown[h] == n for h, n in health.items())

    paths = {s.labels["path"] for s in m["cloudcore_actor_mailbox_depth"]}
    hosts = {h.id for h in (await api.store.list(Host)).items}
    assert {f"/user/dc/dc1/{h}" for h in hosts} <= paths
    assert all(p.count("/") <= 4 for p in paths)  # no series per VM
    assert m["cloudcore_actors"][0].value > len(paths)  # the VM's actor is counted
    assert m["cloudcore_actor_mailbox_messages"][0].value >= 0
    kinds = {s.labels["kind"] for s in m["cloudcore_actor_restarts"]}
    assert {"HostActor", "VMActor"} <= kinds
    assert all(s.name == "cloudcore_actor_restarts_total" for s in m["cloudcore_actor_restarts"])


async def test_metrics_are_served_at_the_root_and_under_the_api_prefix(api: ApiClient) -> None:
    for path in ("/metrics", "/api/v1/metrics"):
        assert "cloudcore_actors" in await scrape(api, path)


async def test_a_scrape_storm_reads_the_store_counts_once(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    count_by = api.store.count_by

    async def counting(*args: Any) -> dict[str, int]:
        nonlocal calls
        calls += 1
        return await count_by(*args)

    monkeypatch.setattr(api.store, "count_by", counting)
    await asyncio.gather(*(scrape(api) for _ in range(20)))
    assert calls <= 4 * 2  # VMs, hosts, volumes, templates; once more if the 2 s TTL ran out


@pytest.mark.parametrize(
    ("sockname", "allowed"),
    [
        (("127.0.0.1", 8080), True),
        (("::1", 8080, 0, 0), True),
        (("10.1.2.3", 8080), False),
        (("::", 8080, 0, 0), False),
        ("/run/cloudcore.sock", False),
    ],
)
def test_metrics_answer_only_connections_on_a_loopback_address(
    sockname: object, allowed: bool
) -> None:
    transport = mock.Mock()
    transport.get_extra_info.return_value = sockname
    request = make_mocked_request("GET", "/metrics", transport=transport)
    assert on_loopback(request) is allowed


async def test_volumes_by_state_and_pool_capacity(api: ApiClient) -> None:
    created = await api.call(
        "POST", "/volumes", "alice", {"name": "d", "datacenter_id": "dc1", "size_gib": 2}
    )
    assert created.status == 202, created.body
    assert (await api.wait_task(created.body["id"])).state == "SUCCEEDED"

    def counted(families: dict[str, list[Sample]]) -> bool:  # the counts are cached 2 s
        return any(
            s.labels == {"state": "AVAILABLE"} and s.value == 1
            for s in families.get("cloudcore_volumes", [])
        )

    families = await scrape_until(api, counted)

    pools = families["cloudcore_storage_pool_mib"]
    assert value(pools, "cloudcore_storage_pool_mib", pool="dc1-pool", kind="committed") == 2048
    assert value(pools, "cloudcore_storage_pool_mib", pool="dc1-pool", kind="limit") > 2048


async def test_each_network_shows_its_addresses_used_and_free(api: ApiClient) -> None:
    lan = {"name": "lan", "datacenter_id": "dc1", "cidr": "10.62.0.0/29", "gateway": "10.62.0.1"}
    net = (await api.call("POST", "/networks", "alice", lan)).body  # hosts .1 to .6, .1 reserved
    r = await api.call("POST", "/vms", "alice", {**WEB, "nics": [{"network_id": net["id"]}]})
    assert r.status == 202, r.body

    def shown(families: dict[str, Any]) -> bool:
        samples = families.get("cloudcore_network_addresses", [])
        return any(s.labels.get("network") == net["id"] for s in samples)

    families = await scrape_until(api, shown)
    samples = families["cloudcore_network_addresses"]
    name = "cloudcore_network_addresses"
    assert value(samples, name, network=net["id"], state="used") == 1
    assert value(samples, name, network=net["id"], state="free") == 4


async def test_templates_and_the_image_library_show_by_state_and_repository(
    api: ApiClient, tmp_path: Any
) -> None:
    from tests.component.gateway.test_images_api import new_template, put_image, qcow2_image, sha

    image = qcow2_image(tmp_path).read_bytes()
    tid = await new_template(api)
    await new_template(api)  # NEW, no image
    assert (await put_image(api, tid, image, size=len(image), digest=sha(image))).status == 200
    m = await scrape(api)
    assert value(m["cloudcore_templates"], "cloudcore_templates", state="AVAILABLE") == 1
    assert value(m["cloudcore_templates"], "cloudcore_templates", state="NEW") == 1
    name = "cloudcore_image_library_images"
    assert value(m[name], name, repository="_shared") == 1
    stored = value(m["cloudcore_image_library_bytes"], "cloudcore_image_library_bytes",
                   repository="_shared")  # fmt: skip
    assert stored > 0


async def test_migrations_by_outcome_ha_restarts_fences_and_hosts_by_admin_state(
    api: ApiClient,
) -> None:
    created = await api.call("POST", "/vms", "alice", WEB)
    assert (await api.wait_task(created.body["id"])).state == "SUCCEEDED"
    vm_id = created.body["subject"].removeprefix("vm/")
    source = (await api.store.get(VM, vm_id)).host_id
    moved = await api.call("POST", f"/vms/{vm_id}/migrate", "operator", {})
    assert moved.status == 202, moved.body
    assert (await api.wait_task(moved.body["id"])).state == "SUCCEEDED"
    drained = await api.call("POST", f"/hosts/{source}/maintenance", "operator")
    assert drained.status == 202, drained.body
    assert (await api.wait_task(drained.body["id"])).state == "SUCCEEDED"
    # What HA writes when it fences a host and restarts a VM (actors/ha.py; the HA tests see
    # it written), relayed from the outbox as HA's own events are.
    await api.store.write_events(
        [
            OutboxEvent(type="host.fenced", subject="host/dc1-h9", data={"how": "test"}),
            OutboxEvent(type="vm.ha_restart", subject="vm/x", data={"from_host": "dc1-h9"}),
        ]
    )

    def counted(families: dict[str, list[Sample]]) -> bool:
        return bool(families.get("cloudcore_ha_restarts")) and any(
            s.value >= 1 for s in families["cloudcore_ha_restarts"]
        )

    m = await scrape_until(api, counted)
    assert value(m["cloudcore_migrations"], "cloudcore_migrations_total", outcome="SUCCEEDED") == 1
    assert value(m["cloudcore_ha_restarts"], "cloudcore_ha_restarts_total") == 1
    assert value(m["cloudcore_hosts_fenced"], "cloudcore_hosts_fenced_total") == 1
    admin = {s.labels["admin_state"]: s.value for s in m["cloudcore_hosts_by_admin_state"]}
    assert admin["MAINTENANCE"] == 1 and admin["ENABLED"] == 1 and admin["DISABLED"] == 0
