"""Benchmark: mpush against the original algorithm and against the in-Redis limit, in one run.

Drains a backlog of N messages (default 200,000, 100 bytes each) to 2 output lists with:
  (a) the original algorithm, ported literally: BLMOVE into a pending list, then MULTI with one
      LPUSH per output and an LREM from pending, one message at a time (measured on a sample);
  (b) the in-Redis limit: a bare Lua script moving batches of 1,000 (one RPOP count, one
      multi-value LPUSH per output), called in a loop with no service around it;
  (c) mpush itself, a real `mpush mpush` process (registry and metrics, no message tracking);
  (d) the same with message tracking on (docs/tracking.md).
Then the latency of a lone message through an idle mpush (LPUSH → BRPOP on an output).
Prints msgs/s for each and the ratios. Uses a private redis-server on a free port.

    .venv/bin/python bench/mpush.py [--messages 200000] [--sample 20000]
"""

from __future__ import annotations

import argparse
import asyncio
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

from redis.asyncio import Redis  # noqa: E402

from mpush.orchestration.redisserver import RedisServer  # noqa: E402

IN, OUTS, PENDING, BACKLOG = "b:in", ("b:out0", "b:out1"), "b:pending", "b:backlog"
NS = "b:svc"

BULK_LUA = """
local msgs = redis.call('RPOP', KEYS[1], ARGV[1])
if not msgs then return 0 end
for i = 2, #KEYS do redis.call('LPUSH', KEYS[i], unpack(msgs)) end
return #msgs
"""


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


async def bare_lua(r: Redis, count: int) -> float:
    await reset(r)
    await fill(r, IN, count)
    script = r.register_script(BULK_LUA)
    began = time.perf_counter()
    while await script(keys=[IN, *OUTS], args=[1000]):
        pass
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
            limit = await bare_lua(r, opts.messages)
            log = Path(tmp) / "mpush.log"
            ours, lat = await service(r, server.url, opts.messages, log, tracked=False)
            tracked, _ = await service(r, server.url, opts.messages, log, tracked=True)
        finally:
            await r.aclose()
            server.stop()
    p50, p99 = statistics.median(lat), statistics.quantiles(lat, n=100)[98]
    print(f"backlog {opts.messages:,} messages of 100 bytes → 2 outputs")
    print(f"(a) original algorithm (sample {opts.sample:,}) {orig:12,.0f} msgs/s")
    print(f"(b) in-Redis limit, bare Lua batches of 1000  {limit:12,.0f} msgs/s")
    print(f"(c) mpush service                             {ours:12,.0f} msgs/s")
    print(f"(d) mpush service, message tracking on        {tracked:12,.0f} msgs/s")
    print(f"mpush / in-Redis limit   {ours / limit:6.2f}   (target >= 0.50)")
    print(f"mpush / original         {ours / orig:6.1f}x")
    print(f"tracked / untracked      {tracked / ours:6.2f}   (target >= 0.30)")
    print(
        f"lone message latency through idle mpush: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
        f"(target p50 <= 2 ms; includes the BRPOP consumer's wake-up)"
    )


if __name__ == "__main__":
    asyncio.run(main())
