"""scripts/bench cluster: remote actors over RabbitMQ against raw aio-pika and Thespian TCP.

Two node processes on the local broker: this process is node A (the sender), a child process
is node B (the actors). Peers run in the same invocation: raw aio-pika one message per publish
(confirmed, to a queue consumed by the child) and request/reply, and Thespian's
multiprocTCPBase ping-pong. Every figure is the median of --rounds rounds. Prints ONE JSON
object. Queues and exchanges are named after this run and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from _thespian_peers import TPinger, TPonger

from cloudcore.cluster import ClusterNode
from cloudcore.config import ClusterSettings, NodeSettings, Settings, TransportSettings
from cloudcore.logging import configure_logging
from cloudcore.runtime import Actor, ActorRef, Message

URL = os.environ.get("CLOUDCORE_TRANSPORT__AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class Start(Message, frozen=True):
    expect: int
    reply_to: ActorRef


class Count(Message, frozen=True):
    n: int


class Done(Message, frozen=True):
    count: int


class Echo(Message, frozen=True):
    n: int


class _Sink(Actor[Start | Count]):
    def __init__(self) -> None:
        self.left = 0
        self.reply_to: ActorRef | None = None

    async def receive(self, message: Start | Count) -> None:
        if isinstance(message, Start):
            self.left, self.reply_to = message.expect, message.reply_to
            return
        self.left -= 1
        if self.left == 0 and self.reply_to is not None:
            self.reply_to.tell(Done(count=message.n))


class _Echo(Actor[Echo]):
    async def receive(self, message: Echo) -> int:
        return message.n


class _Waiter(Actor[Done]):
    def __init__(self, box: list[asyncio.Future[None]]) -> None:
        self.box = box

    async def receive(self, message: Done) -> None:
        self.box[0].set_result(None)


def node_settings(node: str, exchange: str, data_dir: str) -> Settings:
    return Settings(
        node=NodeSettings(id=node, data_dir=data_dir),
        transport=TransportSettings(kind="amqp", amqp_url=URL, exchange=exchange),
        cluster=ClusterSettings(heartbeat_interval=1.0, node_timeout=5.0),
    )


# Thespian binds every interface by default: loopback only, set before any system starts.
os.environ["THESPIAN_BASE_IPADDR"] = "127.0.0.1"

from thespian.system.transport import IPBase  # noqa: E402

_ip_address_init = IPBase.IPActorAddress.__init__


def _loopback_only(self: Any, *args: Any, **kwargs: Any) -> None:
    _ip_address_init(self, *args, **kwargs)
    if self.bindname[0] in ("", "0.0.0.0"):
        self.bindname = ("127.0.0.1", self.bindname[1])


IPBase.IPActorAddress.__init__ = _loopback_only  # type: ignore[method-assign]


# ---------------------------------------------------------------------------- child roles


async def serve_node(exchange: str, data_dir: str) -> None:
    async with ClusterNode(node_settings("bench-b", exchange, data_dir)) as node:
        node.spawn(_Sink, name="sink")
        node.spawn(_Echo, name="echo")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve_raw(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=64)
    # The raw peer gets the cheapest set-up (classic queue, aio-pika's default transient
    # message), while remote tells are persistent into a quorum queue.
    oneway = await channel.declare_queue(f"{prefix}.oneway", durable=True)
    rpc = await channel.declare_queue(f"{prefix}.rpc", auto_delete=True)

    async def on_oneway(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        if message.reply_to:
            await channel.default_exchange.publish(
                aio_pika.Message(b"done"), routing_key=message.reply_to
            )

    async def on_rpc(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        assert message.reply_to is not None
        await channel.default_exchange.publish(
            aio_pika.Message(message.body, correlation_id=message.correlation_id),
            routing_key=message.reply_to,
        )
        await message.ack()

    await oneway.consume(on_oneway)
    await rpc.consume(on_rpc)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await connection.close()


# ---------------------------------------------------------------------------- measurements


async def remote_tell(node: ClusterNode, count: int) -> float:
    sink = node.ref("bench-b", "/user/sink")
    box: list[asyncio.Future[None]] = [asyncio.get_running_loop().create_future()]
    waiter = node.spawn(_Waiter, box)
    await sink.ask(Start(expect=count, reply_to=waiter), timeout=10)
    start = time.perf_counter()
    for i in range(count):
        sink.tell(Count(n=i))
    await asyncio.wait_for(box[0], 600)
    elapsed = time.perf_counter() - start
    waiter.stop()
    return count / elapsed


async def remote_ask(node: ClusterNode, count: int, concurrency: int) -> tuple[float, list[float]]:
    echo = node.ref("bench-b", "/user/echo")
    latencies: list[float] = []

    async def worker(n: int) -> None:
        for i in range(n):
            t0 = time.perf_counter()
            await echo.ask(Echo(n=i), timeout=10)
            latencies.append(time.perf_counter() - t0)

    for i in range(50):  # warm up
        await echo.ask(Echo(n=i), timeout=10)
    start = time.perf_counter()
    await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, latencies


async def raw_publish(prefix: str, count: int) -> float:
    import aio_pika

    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()  # publisher confirms, awaited per publish
        reply = await channel.declare_queue(exclusive=True)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_done(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            if not done.done():
                done.set_result(None)

        await reply.consume(on_done)
        start = time.perf_counter()
        for i in range(count):
            last = i == count - 1
            await channel.default_exchange.publish(
                aio_pika.Message(b"x" * 32, reply_to=reply.name if last else None),
                routing_key=f"{prefix}.oneway",
            )
        await asyncio.wait_for(done, 120)
        return count / (time.perf_counter() - start)
    finally:
        await connection.close()


async def raw_rpc(prefix: str, count: int) -> float:
    import aio_pika

    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        callback = await channel.declare_queue(exclusive=True)
        futures: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            future = futures.pop(message.correlation_id or "", None)
            if future is not None:
                future.set_result(message.body)

        await callback.consume(on_reply, no_ack=True)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for i in range(count):
            cid = str(i)
            future = futures[cid] = loop.create_future()
            await channel.default_exchange.publish(
                aio_pika.Message(b"ping", correlation_id=cid, reply_to=callback.name),
                routing_key=f"{prefix}.rpc",
            )
            await asyncio.wait_for(future, 10)
        return count / (time.perf_counter() - start)
    finally:
        await connection.close()


def thespian_tcp(count: int, admin_port: int) -> float:
    from thespian.actors import ActorSystem as TSystem

    system = TSystem(
        "multiprocTCPBase",
        capabilities={"Admin Port": admin_port},
        logDefs={"version": 1, "disable_existing_loggers": False, "loggers": {}},
    )
    try:
        ponger = system.createActor(TPonger)
        pinger = system.createActor(TPinger)
        system.ask(pinger, (10, ponger), 30)  # warm up
        start = time.perf_counter()
        reply = system.ask(pinger, (count, ponger), 600)
        elapsed = time.perf_counter() - start
        if reply != "done":
            raise RuntimeError(f"thespian ping-pong ended with {reply!r}")
        return count / elapsed
    finally:
        system.shutdown()


# ---------------------------------------------------------------------------- orchestration


def child(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"benchmark child {args} did not start: {line!r}")
    return proc


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def cleanup(prefix: str, exchange: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        for queue in (
            f"{prefix}.oneway",
            f"{exchange}.node.bench-a",
            f"{exchange}.node.bench-b",
            f"{exchange}.dead-letters",
        ):
            await channel.queue_delete(queue)
        for name in (exchange, f"{exchange}.dlx"):
            await channel.exchange_delete(name)


def median(values: list[float]) -> float:
    return statistics.median(values)


async def cluster_rounds(args: argparse.Namespace, exchange: str, data_dir: str) -> dict[str, Any]:
    proc = child("--serve-node", exchange, data_dir)
    tells, ask1, ask64, p50, p99 = [], [], [], [], []
    try:
        async with ClusterNode(node_settings("bench-a", exchange, data_dir)) as node:
            await node.wait_for_nodes(["bench-b"], 10)
            for _ in range(args.rounds):
                tells.append(await remote_tell(node, args.tells))
                rate, latencies = await remote_ask(node, args.asks, 1)
                ask1.append(rate)
                latencies.sort()
                p50.append(latencies[len(latencies) // 2] * 1000)
                p99.append(latencies[int(len(latencies) * 0.99)] * 1000)
                rate64, _ = await remote_ask(node, args.asks64, 64)
                ask64.append(rate64)
    finally:
        finish(proc)
    return {
        "remote_tell_msg_per_s": median(tells),
        "remote_ask_rt_per_s_1": median(ask1),
        "remote_ask_rt_per_s_64": median(ask64),
        "remote_ask_p50_ms": median(p50),
        "remote_ask_p99_ms": median(p99),
    }


async def raw_rounds(args: argparse.Namespace, prefix: str) -> dict[str, float]:
    proc = child("--serve-raw", prefix)
    publish, rpc = [], []
    try:
        for _ in range(args.rounds):
            publish.append(await raw_publish(prefix, args.raw_publish))
            rpc.append(await raw_rpc(prefix, args.raw_rpc))
    finally:
        finish(proc)
    return {"aiopika_publish_msg_per_s": median(publish), "aiopika_rpc_rt_per_s": median(rpc)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tells", type=int, default=100_000)
    parser.add_argument("--asks", type=int, default=3_000)
    parser.add_argument("--asks64", type=int, default=32_000)
    parser.add_argument("--raw-publish", type=int, default=3_000)
    parser.add_argument("--raw-rpc", type=int, default=2_000)
    parser.add_argument("--thespian", type=int, default=3_000)
    parser.add_argument("--serve-node", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-raw", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("warning", "json")
    if args.serve_node:
        asyncio.run(serve_node(*args.serve_node))
        return
    if args.serve_raw:
        asyncio.run(serve_raw(args.serve_raw))
        return

    run = f"bench-{os.getpid()}"
    exchange, prefix = f"{run}.x", f"{run}.raw"
    with tempfile.TemporaryDirectory() as data_dir:
        try:
            ours = asyncio.run(cluster_rounds(args, exchange, data_dir))
            raw = asyncio.run(raw_rounds(args, prefix))
        finally:
            asyncio.run(cleanup(prefix, exchange))
    thespian = median(
        [thespian_tcp(args.thespian, 19_500 + os.getpid() % 400) for _ in range(args.rounds)]
    )
    tell_ratio = ours["remote_tell_msg_per_s"] / raw["aiopika_publish_msg_per_s"]
    ask_ratio = ours["remote_ask_rt_per_s_1"] / raw["aiopika_rpc_rt_per_s"]
    emit(
        {
            "suite": "cluster",
            "rounds": args.rounds,
            **{k: round(v, 3) if k.endswith("_ms") else round(v) for k, v in ours.items()},
            **{k: round(v) for k, v in raw.items()},
            "thespian_tcp_pingpong_rt_per_s": round(thespian),
            "ratios": {
                "tell_vs_aiopika_publish": round(tell_ratio, 2),
                "ask1_vs_aiopika_rpc": round(ask_ratio, 2),
                "ask1_vs_thespian_tcp": round(ours["remote_ask_rt_per_s_1"] / thespian, 2),
            },
            "goals": {
                "remote_tell_msg_per_s >= 10 x aiopika_publish_msg_per_s": tell_ratio >= 10,
                "remote_ask_rt_per_s_1 >= aiopika_rpc_rt_per_s": ask_ratio >= 1,
                "remote_ask_rt_per_s_64 >= 10000": ours["remote_ask_rt_per_s_64"] >= 10_000,
                "remote_ask_p50_ms <= 1.5": ours["remote_ask_p50_ms"] <= 1.5,
            },
        }
    )


if __name__ == "__main__":
    main()
