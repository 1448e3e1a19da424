"""A VM console in a cluster: a real QEMU VM on a remote-services node's host, its VNC opened
by that node and relayed through RabbitMQ to the server node's WebSocket, where a VNC client
makes the RFB handshake (and its serial console the same way). The relay ends with either
side, and while the datacenter's node is down the console answers 503 with Retry-After."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from actors.registration import host_record
from cloudcore.cluster import ClusterNode
from cloudcore.config import Settings
from cloudcore.store.postgres import PostgresStore
from cloudcore.store.records import VM
from tests.integration.console.test_serial_console import _GREETING, _until
from tests.integration.console.test_vnc_proxy import rfb_handshake
from tests.integration.libvirt.conftest import domain_type, libvirtd, virsh  # noqa: F401
from tests.integration.profiles.api import Api
from tests.integration.profiles.conftest import _broker_up
from tests.integration.profiles.launcher import Cluster
from tests.integration.profiles.test_three_nodes import deploy, paths
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def qemu_cluster(
    tmp_path: Path,
    libvirtd: str,  # noqa: F811 - the imported fixture
    domain_type: str,  # noqa: F811
) -> AsyncIterator[Cluster]:
    """``server`` (the API) and ``node-dc1``, whose datacenter has the real libvirtd as a host
    beside the demo's simulated one (disabled by the test). Its VMs are destroyed and undefined
    afterwards."""
    if not _broker_up():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 (scripts/test starts it)")
    group = Cluster(tmp_path, ("dc1",), hosts=1)
    vms: list[str] = []
    try:
        await group.create()
        await group.start("server")  # its demo writes dc1
        store = await PostgresStore.connect(group.dsn, pool_size=1)
        try:
            host = host_record(
                Settings(),
                host_id=f"qemu-{os.urandom(3).hex()}",
                datacenter_id="dc1",
                hypervisor="libvirt",
                uri=libvirtd,
                physical_cpus=64,
                physical_memory_mib=65536,
            )
            caps = {**host.capabilities, "driver.domain_type": domain_type}
            await store.create(msgspec.structs.replace(host, capabilities=caps))
            yield group
            vms = [vm.id for vm in (await store.list(VM, limit=1000)).items]
        finally:
            await store.close()
    finally:
        await group.remove()
        for vm_id in vms:
            virsh("destroy", f"cc-{vm_id}", check=False)
            virsh("undefine", f"cc-{vm_id}", "--managed-save", "--snapshots-metadata", check=False)


async def _console_paths(here: ClusterNode) -> tuple[set[str], set[str]]:
    """The console streams living now on the server and on dc1's node."""
    server = {p for p in paths(await here.tree("server", "/user")) if "/console-" in p}
    owner = {p for p in paths(await here.tree("node-dc1", "/user")) if "/console-" in p}
    return server, owner


async def test_a_remote_vms_vnc_is_relayed_through_the_cluster_and_503_while_its_node_is_down(
    qemu_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = qemu_cluster
    await cluster.start("node-dc1")
    here = ClusterNode(_here_settings(cluster, tmp_path))
    api = Api(cluster.api)
    try:
        await here.start()
        await here.wait_for_nodes(["server", "node-dc1"], 20)
        disabled = await api.call("POST", "/hosts/dc1-h1/disable")  # VMs go to QEMU's host
        assert disabled.status == 200, disabled.body
        vm = await deploy(api, "dc1", "console")
        assert virsh("domstate", f"cc-{vm['id']}").stdout.strip() == "running"

        r = await api.call("GET", f"/vms/{vm['id']}/console")
        assert r.status == 200, r.body
        async with api.session.ws_connect(r.body["url"], protocols=("binary",)) as ws:
            assert await rfb_handshake(ws) == f"QEMU (cc-{vm['id']})"
            # One stream per side: the API's on the server, the console's on dc1's node.
            server, owner = await _console_paths(here)
            assert len(server) == 1 and len(owner) == 1, (server, owner)
            assert next(iter(owner)).startswith("/user/console-")
        # The client closed: both sides end.
        assert await eventually(lambda: _none_open(here), timeout=20)

        # Single use, as on one node.
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await fresh.ws_connect(r.body["url"])
        assert refused.value.status == 404

        # The serial console, from the pseudo-terminal on dc1's node: one session at a time.
        r = await api.call("GET", f"/vms/{vm['id']}/console?kind=serial")
        assert r.status == 200, r.body
        async with api.session.ws_connect(r.body["url"]) as ws:
            second = await api.call("GET", f"/vms/{vm['id']}/console?kind=serial")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await api.session.ws_connect(second.body["url"])
            assert refused.value.status == 409
            seen = await _until(ws, b"Machine UUID " + vm["id"].encode(), timeout=_GREETING)
        assert b"SeaBIOS" in seen
        assert await eventually(lambda: _none_open(here), timeout=20)

        # The owner's node dies mid-session: the client's socket is closed.
        r = await api.call("GET", f"/vms/{vm['id']}/console")
        unspent = await api.call("GET", f"/vms/{vm['id']}/console")
        async with api.session.ws_connect(r.body["url"], protocols=("binary",)) as ws:
            assert (await ws.receive(timeout=30)).data[:12] == b"RFB 003.008\n"
            cluster.kill("node-dc1")
            closing = await ws.receive(timeout=30)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing

        async def refused_503() -> bool:
            return (await api.call("GET", f"/vms/{vm['id']}/console")).status == 503

        await eventually(refused_503, timeout=20)
        down = await api.call("GET", f"/vms/{vm['id']}/console")
        assert down.headers.get("Retry-After"), down.headers
        assert down.body["error"]["code"] == "datacenter_unavailable", down.body
        # A ticket issued before: refused the same way, and left unspent.
        async with aiohttp.ClientSession() as fresh:
            for _ in range(2):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await fresh.ws_connect(unspent.body["url"])
                assert refused.value.status == 503
                assert refused.value.headers is not None
                assert refused.value.headers.get("Retry-After")
    finally:
        await api.close()
        await here.stop()


async def _none_open(here: ClusterNode) -> bool:
    server, owner = await _console_paths(here)
    return not server and not owner


def _here_settings(cluster: Cluster, tmp_path: Path) -> Settings:
    from cloudcore.config import ClusterSettings, NodeSettings, TransportSettings

    return Settings(
        node=NodeSettings(id="pytest", data_dir=str(tmp_path / "pytest")),
        transport=TransportSettings(
            kind="amqp", amqp_url=cluster.amqp_url, exchange=cluster.tag, reconnect_max_delay=1.0
        ),
        cluster=ClusterSettings(heartbeat_interval=0.25, node_timeout=1.5),
    )
