"""scripts/bench runtime: the local actor runtime against raw asyncio, Thespian and pykka.

Prints ONE JSON object. Every figure is the median of --rounds rounds; peers run in the same
invocation so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit, median_of, rss_bytes

from cloudcore.runtime import Actor, ActorRef, ActorSystem, Message


class Ball(Message, frozen=True):
    pass


class _Ponger(Actor[Ball]):
    def __init__(self) -> None:
        self.peer: ActorRef | None = None

    async def receive(self, message: Ball) -> None:
        assert self.peer is not None
        self.peer.tell(message)


class _Pinger(Actor[Ball]):
    def __init__(self, peer: ActorRef, count: int, done: asyncio.Future[None]) -> None:
        self.peer, self.left, self.done = peer, count, done

    async def receive(self, message: Ball) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set_result(None)
        else:
            self.peer.tell(message)


class _Sink(Actor[Ball]):
    def __init__(self, count: int, done: asyncio.Future[None]) -> None:
        self.left, self.done = count, done

    async def receive(self, message: Ball) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set_result(None)


class _Idle(Actor[Ball]):
    async def receive(self, message: Ball) -> None:
        pass


async def local_pingpong(count: int) -> float:
    async with ActorSystem() as system:
        done = asyncio.get_running_loop().create_future()
        ponger = system.spawn(_Ponger)
        pinger = system.spawn(_Pinger, ponger, count, done)
        system.lookup(ponger.path)  # warm the lookup path, not measured
        ponger_actor = system._cell_at(ponger.path).actor
        assert isinstance(ponger_actor, _Ponger)
        ponger_actor.peer = pinger
        start = time.perf_counter()
        ponger.tell(Ball())
        await done
        return count / (time.perf_counter() - start)


async def asyncio_pingpong(count: int) -> float:
    a: asyncio.Queue[int] = asyncio.Queue()
    b: asyncio.Queue[int] = asyncio.Queue()

    async def ponger() -> None:
        for _ in range(count):
            b.put_nowait(await a.get())

    task = asyncio.create_task(ponger())
    start = time.perf_counter()
    for i in range(count):
        a.put_nowait(i)
        await b.get()
    elapsed = time.perf_counter() - start
    await task
    return count / elapsed


async def local_tell(count: int) -> float:
    async with ActorSystem() as system:
        done = asyncio.get_running_loop().create_future()
        sink = system.spawn(_Sink, count, done)
        ball = Ball()
        start = time.perf_counter()
        for _ in range(count):
            sink.tell(ball)
        await done
        return count / (time.perf_counter() - start)


async def asyncio_oneway(count: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def consumer() -> None:
        for _ in range(count):
            await queue.get()

    task = asyncio.create_task(consumer())
    start = time.perf_counter()
    for i in range(count):
        queue.put_nowait(i)
    await task
    return count / (time.perf_counter() - start)


def thespian_pingpong(count: int) -> float:
    from _thespian_peers import TPinger, TPonger
    from thespian.actors import ActorSystem as TSystem

    system = TSystem("simpleSystemBase", logDefs={"version": 1, "loggers": {}})
    try:
        ponger = system.createActor(TPonger)
        pinger = system.createActor(TPinger)
        start = time.perf_counter()
        reply = system.ask(pinger, (count, ponger), 600)
        elapsed = time.perf_counter() - start
        if reply != "done":
            raise RuntimeError(f"thespian ping-pong ended with {reply!r}")
        return count / elapsed
    finally:
        system.shutdown()


def pykka_pingpong(count: int) -> float:
    import pykka

    done = threading.Event()

    class PPonger(pykka.ThreadingActor):  # type: ignore[misc]
        def on_receive(self, message: Any) -> None:
            message["peer"].tell({"peer": self.actor_ref})

    class PPinger(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.left = count

        def on_receive(self, message: Any) -> None:
            self.left -= 1
            if self.left == 0:
                done.set()
            else:
                message["peer"].tell({"peer": self.actor_ref})

    ponger = PPonger.start()
    pinger = PPinger.start()
    try:
        start = time.perf_counter()
        ponger.tell({"peer": pinger})
        if not done.wait(600):
            raise RuntimeError("pykka ping-pong did not finish")
        return count / (time.perf_counter() - start)
    finally:
        pykka.ActorRegistry.stop_all()


async def spawn_idle(count: int) -> dict[str, float]:
    """Spawn ``count`` idle actors; rate and resident memory per actor. Run in a fresh process."""
    async with ActorSystem() as system:
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        for _ in range(count):
            system.spawn(_Idle)
        elapsed = time.perf_counter() - start
        gc.collect()
        grown = rss_bytes() - before
        return {"spawn_per_s": count / elapsed, "spawn_s": elapsed, "bytes": grown / count}


def spawn_in_subprocess(count: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--spawn-only", str(count)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pingpong", type=int, default=200_000)
    parser.add_argument("--tells", type=int, default=1_000_000)
    parser.add_argument("--peers-pingpong", type=int, default=20_000)
    parser.add_argument("--spawn", type=int, default=100_000)
    parser.add_argument("--spawn-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spawn_only:
        print(json.dumps(asyncio.run(spawn_idle(args.spawn_only))))
        return

    rounds = args.rounds
    pp = median_of(rounds, lambda: asyncio.run(local_pingpong(args.pingpong)))
    app = median_of(rounds, lambda: asyncio.run(asyncio_pingpong(args.pingpong)))
    tell = median_of(rounds, lambda: asyncio.run(local_tell(args.tells)))
    oneway = median_of(rounds, lambda: asyncio.run(asyncio_oneway(args.tells)))
    thespian = median_of(rounds, lambda: thespian_pingpong(args.peers_pingpong))
    pykka_rt = median_of(rounds, lambda: pykka_pingpong(args.peers_pingpong))
    spawns = [spawn_in_subprocess(args.spawn) for _ in range(rounds)]
    spawn_rate = sorted(s["spawn_per_s"] for s in spawns)[rounds // 2]
    spawn_s = sorted(s["spawn_s"] for s in spawns)[rounds // 2]
    per_actor = sorted(s["bytes"] for s in spawns)[rounds // 2]

    emit(
        {
            "suite": "runtime",
            "rounds": rounds,
            "local_pingpong_rt_per_s": round(pp),
            "asyncio_pingpong_rt_per_s": round(app),
            "local_tell_msg_per_s": round(tell),
            "asyncio_oneway_msg_per_s": round(oneway),
            "thespian_simple_pingpong_rt_per_s": round(thespian),
            "pykka_pingpong_rt_per_s": round(pykka_rt),
            "spawn_per_s": round(spawn_rate),
            "spawn_100k_s": round(spawn_s, 3),
            "bytes_per_idle_actor": round(per_actor),
            "ratios": {
                "pingpong_vs_asyncio": round(pp / app, 3),
                "tell_vs_asyncio_oneway": round(tell / oneway, 3),
                "pingpong_vs_pykka": round(pp / pykka_rt, 2),
                "pingpong_vs_thespian_simple": round(pp / thespian, 2),
            },
            "goals": {
                "pingpong_vs_asyncio >= 0.8": pp / app >= 0.8,
                "tell_vs_asyncio_oneway >= 0.5": tell / oneway >= 0.5,
                "pingpong_vs_pykka >= 4": pp / pykka_rt >= 4,
                "spawn_100k_s < 2": spawn_s < 2,
                "bytes_per_idle_actor <= 2048": per_actor <= 2048,
            },
        }
    )


if __name__ == "__main__":
    main()
