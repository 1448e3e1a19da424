"""A cluster node process for the integration tests.

    python -m tests.integration.cluster.node_main NODE_ID AMQP_URL EXCHANGE DATA_DIR [k=v ...]

Spawns /user/counter, /user/recorder (SQLite at DATA_DIR/NODE_ID.sqlite) and /user/probe,
prints ``ready`` once joined, and runs until SIGTERM (or SIGKILL, which is the point).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Literal

from cloudcore.cluster import ClusterNode
from cloudcore.config import ClusterSettings, NodeSettings, Settings, TransportSettings
from cloudcore.logging import configure_logging
from tests.integration.cluster.actors import Counter, Probe, Recorder

HEARTBEAT = 0.25
TIMEOUT = 1.5
DELIVERY_LIMIT = 2


def settings(
    node: str,
    url: str,
    exchange: str,
    data_dir: str,
    caps: dict[str, str],
    queue_type: Literal["quorum", "classic"] = "quorum",
    delivery_limit: int = 5,
) -> Settings:
    return Settings(
        node=NodeSettings(id=node, data_dir=data_dir, capabilities=caps),
        transport=TransportSettings(
            kind="amqp",
            amqp_url=url,
            exchange=exchange,
            queue_type=queue_type,
            delivery_limit=delivery_limit,
            reconnect_max_delay=1.0,
        ),
        cluster=ClusterSettings(heartbeat_interval=HEARTBEAT, node_timeout=TIMEOUT),
    )


async def main(argv: list[str]) -> None:
    node_id, url, exchange, data_dir, *pairs = argv
    caps = dict(pair.split("=", 1) for pair in pairs)

    def setup(node: ClusterNode) -> None:
        node.spawn(Counter, name="counter")
        node.spawn(Recorder, str(Path(data_dir) / f"{node_id}.sqlite"), name="recorder")
        node.spawn(Probe, node, name="probe")

    queue_type: Literal["quorum", "classic"] = (
        "classic" if os.environ.get("CC_TEST_QUEUE_TYPE") == "classic" else "quorum"
    )
    node = ClusterNode(
        settings(node_id, url, exchange, data_dir, caps, queue_type, DELIVERY_LIMIT),
        kinds={"Counter": Counter},
        setup=setup,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with node:
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    configure_logging("info", "json")
    asyncio.run(main(sys.argv[1:]))
