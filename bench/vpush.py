"""Benchmark: vpush against a naive per-message bridge between two Redis servers, in one run.

Drains a backlog of 100-byte messages from a source redis-server to a list on a second one with:
  (a) the naive reliable bridge: BLMOVE into a processing list on the source, LPUSH to the
      destination, LREM from the processing list — three round trips per message, no fencing,
      no dedupe (a crash between LPUSH and LREM duplicates a message);
  (b) vpush --batch 1, a real `mpush vpush` process: one message in flight at a time, fenced,
      deduplicated (two round trips per message: claim+ack on the source, deliver);
  (c) vpush --batch 100, the same with up to 100 messages per round trip.
Then the latency of a lone message through an idle vpush (LPUSH on the source → BRPOP on the
destination). The three runs alternate for several rounds and the medians are compared, so a
burst of load from elsewhere on the machine does not decide the ratios. Prints msgs/s for each
and the ratios. Uses two private redis-servers on free ports.

    .venv/bin/python bench/vpush.py [--messages 20000] [--batched 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path and "mpush" would name
# bench/mpush.py instead of the package: take the directory off the path first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from mpush.connection import AnyRedis, connect, parse_redis_url  # noqa: E402
from mpush.orchestration.redisserver import RedisServer  # noqa: E402

IN, OUT, PROCESSING, BACKLOG = "b:in", "b:out", "b:processing", "b:backlog"
LEASE = f"{IN}:vpush:lease"


async def fill(r: AnyRedis, key: str, count: int) -> None:
    payload = "x" * 92
    chunk = 5000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        await r.lpush(key, *[f"{start + i:08d}{payload}" for i in range(n)])


async def wait_for(condition: Callable[[], Awaitable[object]], within: float = 120.0) -> None:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.005)  # gently: this process shares the CPUs with the one measured
    raise TimeoutError("benchmark condition not met")


async def naive(src: AnyRedis, dst: AnyRedis, count: int) -> float:
    await src.flushall()
    await dst.flushall()
    await fill(src, IN, count)
    began = time.perf_counter()
    for _ in range(count):
        msg: Any = await src.blmove(IN, PROCESSING, 1, "RIGHT", "LEFT")
        await dst.lpush(OUT, msg)
        await src.lrem(PROCESSING, -1, msg)
    elapsed = time.perf_counter() - began
    assert await dst.llen(OUT) == count
    return count / elapsed


def start_vpush(src_url: str, dst_url: str, batch: int, log: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "mpush",
        "vpush",
        "--redis",
        src_url,
        "--in",
        IN,
        "--out-redis",
        dst_url,
        "--out",
        OUT,
        "--batch",
        str(batch),
        "--service-namespace",
        "b:svc",
        "--log-level",
        "WARNING",
    ]
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def vpush(
    src: AnyRedis, dst: AnyRedis, urls: tuple[str, str], batch: int, count: int, log: Path
) -> tuple[float, list[float]]:
    await src.flushall()
    await dst.flushall()
    await fill(src, BACKLOG, count)
    proc = start_vpush(*urls, batch, log)
    try:
        await wait_for(lambda: src.exists(LEASE))  # the mover is up and active
        began = time.perf_counter()
        await src.rename(BACKLOG, IN)  # the whole backlog appears at once
        await wait_for(lambda: _delivered(dst, count))
        rate = count / (time.perf_counter() - began)
        oldest: Any = await dst.lindex(OUT, -1)
        newest: Any = await dst.lindex(OUT, 0)
        assert oldest.startswith(b"00000000"), "the oldest message is at the tail"
        assert newest.startswith(f"{count - 1:08d}".encode()), "the newest at the head"
        latencies = await lone_latency(src, dst) if batch == 1 else []
    finally:
        proc.terminate()
        proc.wait(15)
    return rate, latencies


async def _delivered(dst: AnyRedis, count: int) -> bool:
    return int(await dst.llen(OUT)) >= count


async def lone_latency(src: AnyRedis, dst: AnyRedis, samples: int = 300) -> list[float]:
    await dst.delete(OUT)
    result = []
    for i in range(samples):
        began = time.perf_counter()
        await src.lpush(IN, f"lone{i}")
        await dst.brpop([OUT], timeout=5)
        result.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.002)  # let vpush go idle (blocked) again
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="for (a) and (b)")
    parser.add_argument("--batched", type=int, default=200_000, help="for (c)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    opts = parser.parse_args()
    rates: dict[str, list[float]] = {"naive": [], "one": [], "hundred": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        servers = [RedisServer(base / name, extra=("--appendonly", "no")).start() for name in "ab"]
        # The baseline gets the client configuration vpush's hot path uses (no socket timeout,
        # no hidden retries): redis-py's defaults alone cost the naive bridge about 30%.
        src, dst = (connect(parse_redis_url(s.url), socket_timeout=None) for s in servers)
        urls = (servers[0].url, servers[1].url)
        try:
            for round_ in range(opts.rounds):
                rates["naive"].append(await naive(src, dst, opts.messages))
                rate, lat = await vpush(src, dst, urls, 1, opts.messages, base / "v1.log")
                rates["one"].append(rate)
                rate, _ = await vpush(src, dst, urls, 100, opts.batched, base / "v100.log")
                rates["hundred"].append(rate)
                print(
                    f"round {round_ + 1}: "
                    + "  ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items())
                )
        finally:
            await src.aclose()
            await dst.aclose()
            for server in servers:
                server.stop()
    bridge, one, hundred = (statistics.median(rates[k]) for k in ("naive", "one", "hundred"))
    p50, p99 = statistics.median(lat), statistics.quantiles(lat, n=100)[98]
    print("100-byte messages, source redis-server → destination redis-server (both local)")
    print(f"medians of {opts.rounds} alternating rounds:")
    print(f"(a) naive bridge BLMOVE/LPUSH/LREM ({opts.messages:,})  {bridge:10,.0f} msgs/s")
    print(f"(b) vpush --batch 1 ({opts.messages:,})               {one:10,.0f} msgs/s")
    print(f"(c) vpush --batch 100 ({opts.batched:,})            {hundred:10,.0f} msgs/s")
    print(f"vpush --batch 1   / naive  {one / bridge:6.2f}x   (target >= 1)")
    print(f"vpush --batch 100 / naive  {hundred / bridge:6.1f}x   (target >= 20)")
    print(f"lone message latency through idle vpush: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    runner: Callable[[Awaitable[None]], None] = asyncio.run  # type: ignore[assignment]
    with contextlib.suppress(ImportError):
        import uvloop  # the service runs on uvloop too: same footing for the baseline

        runner = uvloop.run  # type: ignore[assignment]
    runner(main())
