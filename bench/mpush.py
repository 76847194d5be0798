"""Benchmark: mpush against the original algorithm and against the in-Redis limit, in one run.

Drains a backlog of N messages (default 200,000, 100 bytes each) to 2 output lists with:
  (a) the original's per-message algorithm, ported to Python (a port: the Node original,
      evanx/mpush-redis, is not on npm, so it cannot be installed and run beside it): BLMOVE into
      a pending list, then MULTI with one LPUSH per output and an LREM from pending, one message
      at a time (measured on a sample);
  (b) the in-Redis limit: the service's own move script (lua/move.lua) with the service's own
      batch size (1,000), every call the backlog needs pipelined in one write from a bare socket,
      so Redis runs the moves back to back and never waits for a client. This is Redis's own
      throughput for exactly the commands mpush sends it: mpush cannot move messages faster;
  (c) mpush itself, a real `mpush mpush` process (registry and metrics, no message tracking);
  (d) the same with message tracking on (docs/tracking.md).
Then the latency of a lone message through an idle mpush (LPUSH → BRPOP on an output).
Prints msgs/s for each and the ratios. Uses a private redis-server on a free port.

    .venv/bin/python bench/mpush.py [--messages 200000] [--sample 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and "mpush" would name this file
# instead of the package: take the directory off the path before importing the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import hiredis  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from mpush.config import MoverSettings  # noqa: E402
from mpush.connection import load_lua  # noqa: E402
from mpush.orchestration.redisserver import RedisServer  # noqa: E402

IN, OUTS, PENDING, BACKLOG = "b:in", ("b:out0", "b:out1"), "b:pending", "b:backlog"
NS = "b:svc"

SERVICE_BATCH = int(MoverSettings.model_fields["batch"].default)


async def fill(r: Redis, key: str, count: int) -> None:
    payload = "x" * 92
    chunk = 5000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        await r.lpush(key, *[f"{start + i:08d}{payload}" for i in range(n)])


async def reset(r: Redis) -> None:
    await r.flushall()


async def original(r: Redis, count: int) -> float:
    await reset(r)
    await fill(r, IN, count)
    began = time.perf_counter()
    for _ in range(count):
        msg = await r.blmove(IN, PENDING, 1, "RIGHT", "LEFT")
        async with r.pipeline(transaction=True) as tx:
            for out in OUTS:
                tx.lpush(out, msg)
            tx.lrem(PENDING, -1, msg)
            await tx.execute()
    elapsed = time.perf_counter() - began
    assert await r.llen(OUTS[1]) == count
    return count / elapsed


async def in_redis_limit(r: Redis, port: int, count: int) -> float:
    """The service's move script, batch and arguments, run back to back by Redis itself."""
    await reset(r)
    await fill(r, IN, count)
    sha = await r.script_load(load_lua("move"))
    calls = -(-count // SERVICE_BATCH)
    command = ("EVALSHA", sha, 1 + len(OUTS), IN, *OUTS, SERVICE_BATCH, 0, 0)
    packed = b"".join(hiredis.pack_command(command) for _ in range(calls))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        began = time.perf_counter()
        sock.sendall(packed)
        reader, replies = hiredis.Reader(), 0
        while replies < calls:
            reader.feed(sock.recv(65536))
            while (reply := reader.gets()) is not False:
                assert not isinstance(reply, hiredis.ReplyError), reply
                replies += 1
        elapsed = time.perf_counter() - began
    assert await r.llen(OUTS[1]) == count
    return count / elapsed


def start_mpush(url: str, log: Path, *, tracked: bool) -> subprocess.Popen[bytes]:
    args = f"mpush --in {IN} --out {OUTS[0]} --out {OUTS[1]} --service-namespace {NS}".split()
    args += ["--log-level", "WARNING", "--redis", url]
    if not tracked:
        args.append("--no-message-tracking")
    return subprocess.Popen(
        [sys.executable, "-m", "mpush", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


async def wait_for(condition: Callable[[], Awaitable[object]], within: float = 30.0) -> None:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.002)
    raise TimeoutError("benchmark condition not met")


async def service(
    r: Redis, url: str, count: int, log: Path, *, tracked: bool
) -> tuple[float, list[float]]:
    await reset(r)
    await fill(r, BACKLOG, count)
    proc = start_mpush(url, log, tracked=tracked)
    try:
        await wait_for(lambda: r.exists(f"{NS}:service:1"))
        began = time.perf_counter()
        await r.rename(BACKLOG, IN)  # the whole backlog appears at once
        await wait_for(lambda: _drained(r, count))
        rate = count / (time.perf_counter() - began)
        latencies = await lone_latency(r)
    finally:
        proc.terminate()
        proc.wait(10)
    return rate, latencies


async def _drained(r: Redis, count: int) -> bool:
    return int(await r.llen(OUTS[1])) >= count


async def lone_latency(r: Redis, samples: int = 300) -> list[float]:
    await r.delete(*OUTS)
    result = []
    for i in range(samples):
        began = time.perf_counter()
        await r.lpush(IN, f"lone{i}")
        await r.brpop([OUTS[1]], timeout=5)
        result.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.002)  # let mpush go idle (blocked) again
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument(
        "--sample", type=int, default=20_000, help="messages for the (slow) original algorithm"
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), extra=("--appendonly", "no")).start()
        r = Redis.from_url(server.url)
        try:
            orig = await original(r, opts.sample)
            limit = await in_redis_limit(r, server.port, opts.messages)
            log = Path(tmp) / "mpush.log"
            ours, lat = await service(r, server.url, opts.messages, log, tracked=False)
            tracked, _ = await service(r, server.url, opts.messages, log, tracked=True)
        finally:
            await r.aclose()
            server.stop()
    p50, p99 = statistics.median(lat), statistics.quantiles(lat, n=100)[98]
    print(f"backlog {opts.messages:,} messages of 100 bytes → 2 outputs")
    rows = [
        (f"(a) original algorithm, a Python port (sample {opts.sample:,})", orig),
        (f"(b) in-Redis limit: move.lua, batch {SERVICE_BATCH:,}, back to back", limit),
        ("(c) mpush service", ours),
        ("(d) mpush service, message tracking on", tracked),
    ]
    for label, rate in rows:
        print(f"{label:<58} {rate:10,.0f} msgs/s")
    print(f"mpush / in-Redis limit         {ours / limit:6.2f}   (at most 1.00)")
    print(f"mpush / original (Python port) {ours / orig:6.1f}x")
    print(f"tracked / untracked            {tracked / ours:6.2f}   (target >= 0.30)")
    print(
        f"lone message latency through idle mpush: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
        f"(target p50 <= 2 ms; includes the BRPOP consumer's wake-up)"
    )


if __name__ == "__main__":
    asyncio.run(main())
