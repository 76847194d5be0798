"""Benchmark: mpush's consumer library against saq and BullMQ, on one redis-server, in one run.

A backlog of N no-op messages (default 20,000; made before the clock starts), each taken and
acknowledged, by:
  (a) mpush.consumer, one Consumer, one message at a time (``async for``), with the defaults,
      and again with ``prefetch=50`` (claims of up to 50, handed out one by one);
  (b) mpush.consumer, one Consumer with concurrency 50 (``run(handler)``);
  (c) saq, one Worker with concurrency 50 — the like-for-like Python peer;
  (d) BullMQ, one Worker with concurrency 50 (Node), when ``node`` and ``npm`` are present:
      installed at first run into ~/.cache/mpush-bench/node (outside the repository), skipped
      with a message when that fails.
Then the latency of a lone message through an idle consumer (concurrency 50): from the producer's
LPUSH to the handler holding the message. Prints jobs/s for each and the ratios. Uses a private
redis-server on a free port; saq and mpush run in this process, on the same event loop.

    .venv/bin/pip install -e '.[bench]'   # saq
    .venv/bin/python bench/consumer.py [--messages 20000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path and "mpush" would name
# bench/mpush.py instead of the package: take the directory off the path before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from redis.asyncio import Redis  # noqa: E402

from mpush.consumer import Message, consume  # noqa: E402
from mpush.orchestration.redisserver import RedisServer  # noqa: E402

QUEUE = "{bench}:jobs"
NODE_CACHE = Path.home() / ".cache" / "mpush-bench" / "node"
NODE_PACKAGES = ("bullmq@6", "ioredis@5")  # BullMQ 6 takes ioredis as an optional peer
BULLMQ_SCRIPT = Path(__file__).parent / "apps" / "bullmq_worker.js"


async def fill(r: Redis, count: int) -> None:
    await r.flushall()
    for start in range(0, count, 5000):
        await r.lpush(QUEUE, *[f"job{i:06d}" for i in range(start, min(count, start + 5000))])


async def drained(r: Redis) -> None:
    assert await r.llen(QUEUE) == 0, "the queue drained"
    assert not [key async for key in r.scan_iter(match="{bench}:inflight:*")], "all acknowledged"


async def mpush_one(r: Redis, count: int, prefetch: int = 0) -> float:
    await fill(r, count)
    handled = 0
    began = time.perf_counter()
    async with consume(r, QUEUE, pop_timeout=0.2, prefetch=prefetch) as messages:
        async for _ in messages:
            handled += 1
            if handled == count:
                messages.stop()
    elapsed = time.perf_counter() - began
    await drained(r)
    return count / elapsed


async def mpush_concurrent(r: Redis, count: int, concurrency: int) -> float:
    await fill(r, count)
    handled = 0
    consumer = consume(r, QUEUE, concurrency=concurrency, pop_timeout=0.2)

    async def handle(_: Message) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            consumer.stop()

    began = time.perf_counter()
    await consumer.run(handle)
    elapsed = time.perf_counter() - began
    await drained(r)
    return count / elapsed


async def noop(ctx: Any) -> None:
    """saq's job: nothing (saq names a job function by its name, so it lives at the top)."""


async def saq_concurrent(url: str, count: int, concurrency: int) -> float:
    from saq import Queue, Worker

    queue = Queue.from_url(url, name="bench")
    await queue.connect()
    for start in range(0, count, 500):
        await asyncio.gather(*(queue.enqueue("noop") for _ in range(min(500, count - start))))
    done = 0
    finished = asyncio.Event()

    async def after(ctx: Any) -> None:
        nonlocal done
        done += 1
        if done == count:
            finished.set()

    worker = Worker(queue, functions=[noop], concurrency=concurrency, after_process=after)
    began = time.perf_counter()
    running = asyncio.create_task(worker.start())
    await finished.wait()
    elapsed = time.perf_counter() - began
    await worker.stop()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await queue.disconnect()
    return count / elapsed


def bullmq_ready() -> str | None:
    """The node_modules folder holding BullMQ (installed at first run), or None (why printed)."""
    if not (shutil.which("node") and shutil.which("npm")):
        print("BullMQ: skipped (node and npm are not both installed)")
        return None
    modules = NODE_CACHE / "node_modules"
    if not all((modules / name).is_dir() for name in ("bullmq", "ioredis")):
        print(f"BullMQ: installing {' '.join(NODE_PACKAGES)} into {NODE_CACHE} …", flush=True)
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        install = subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(NODE_CACHE),
                "--no-audit",
                "--no-fund",
                *NODE_PACKAGES,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if install.returncode != 0 or not (modules / "bullmq").is_dir():
            last = (install.stderr or install.stdout).strip().splitlines()[-1:]
            print(f"BullMQ: skipped (npm install failed: {' '.join(last)})")
            return None
    return str(modules)


def bullmq_concurrent(modules: str, port: int, count: int, concurrency: int) -> float | None:
    env = {**os.environ, "NODE_PATH": modules}
    run = subprocess.run(
        ["node", str(BULLMQ_SCRIPT), str(port), str(count), str(concurrency)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if run.returncode != 0:
        print(f"BullMQ: failed: {(run.stderr or run.stdout).strip()[-500:]}")
        return None
    return float(json.loads(run.stdout.strip().splitlines()[-1])["rate"])


async def lone_latency(r: Redis, url: str, concurrency: int, samples: int = 400) -> list[float]:
    """LPUSH → the handler holding the message, through an idle consumer, in milliseconds."""
    await r.flushall()
    producer = Redis.from_url(url)
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[float] = loop.create_future()
    consumer = consume(r, QUEUE, concurrency=concurrency)

    async def handle(_: Message) -> None:
        arrived.set_result(time.perf_counter())

    running = asyncio.create_task(consumer.run(handle))
    await asyncio.sleep(0.2)
    result = []
    for i in range(samples):
        arrived = loop.create_future()
        began = time.perf_counter()
        await producer.lpush(QUEUE, f"lone{i}")
        result.append((await arrived - began) * 1000)
        await asyncio.sleep(0.003)  # the consumer acknowledges, and waits idle again
    consumer.stop()
    await running
    await producer.aclose()
    return result


def bullmq_version(modules: str | None) -> str:
    package = Path(modules or ".") / "bullmq" / "package.json"
    return str(json.loads(package.read_text())["version"])


def node_version() -> str:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return node.stdout.strip()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    opts = parser.parse_args()
    if find_spec("saq") is None:
        raise SystemExit("bench/consumer.py needs saq: .venv/bin/pip install -e '.[bench]'")
    logging.getLogger("saq").setLevel(logging.ERROR)  # its shutdown notes, one per run
    count, c = opts.messages, opts.concurrency
    modules = bullmq_ready()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), extra=("--appendonly", "no")).start()
        r = Redis.from_url(server.url)
        try:
            one = await mpush_one(r, count)
            ahead = await mpush_one(r, count, prefetch=50)
            ours = await mpush_concurrent(r, count, c)
            saq = await saq_concurrent(server.url, count, c)
            await r.flushall()
            bull = bullmq_concurrent(modules, server.port, count, c) if modules else None
            latency = await lone_latency(r, server.url, c)
        finally:
            await r.aclose()
            server.stop()
    p50, p99 = statistics.median(latency), statistics.quantiles(latency, n=100)[98]
    print(f"{count:,} no-op messages, each acknowledged; one redis-server")
    rows = [
        ("(a) mpush consumer, one at a time (async for)", one),
        ("(a2) mpush consumer, one at a time, prefetch 50", ahead),
        (f"(b) mpush consumer, concurrency {c} (run)", ours),
        (f"(c) saq {version('saq')}, Worker concurrency {c}", saq),
    ]
    if bull is not None:
        rows.append(
            (f"(d) BullMQ {bullmq_version(modules)} (Node {node_version()}), concurrency {c}", bull)
        )
    for label, rate in rows:
        print(f"{label:<52} {rate:9,.0f} jobs/s")
    if bull is not None:
        print(f"mpush c{c} / BullMQ c{c}    {ours / bull:6.2f}   (target >= 1.0)")
    print(f"mpush c{c} / saq c{c}       {ours / saq:6.2f}   (target >= 4)")
    print(f"mpush one / saq c{c}       {one / saq:6.2f}")
    print(
        f"lone message through an idle consumer (concurrency {c}), LPUSH → handler: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p50 <= 1 ms)"
    )


if __name__ == "__main__":
    asyncio.run(main())
