"""Benchmark: moving with message tracking against moving without, in one run.

Drains a backlog of N messages (default 100,000, 100 bytes each, distinct) to 2 output lists:
  (a) the move engine untracked: the Mover with ``lua/move.lua``, batches of 1,000, in process;
  (b) the same engine tracked (``lua/move_tracked.lua``), retry off;
  (c) the same engine tracked, retry on (bodies and outputs kept for redelivery);
  (d) the monitor turning N done reports (xids) into response-time metrics;
  (e) a real ``mpush mpush`` process with --no-message-tracking;
  (f) a real ``mpush mpush`` process with tracking (its monitor running beside the mover).
Each figure is the best of --repeat runs (the machine is shared). Prints msgs/s and the ratios.
Uses a private redis-server on a free port.

    .venv/bin/python bench/tracking.py [--messages 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path: take it off before importing.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from redis.asyncio import Redis  # noqa: E402

from mpush.keys import MessageKeys  # noqa: E402
from mpush.orchestration.redisserver import RedisServer  # noqa: E402
from mpush.runtime.metrics import Metrics  # noqa: E402
from mpush.runtime.tracking import Tracking, TrackingPolicy, message_xid  # noqa: E402
from mpush.services.movers.engine import MoveOptions, Mover  # noqa: E402
from mpush.services.movers.monitor import Monitor  # noqa: E402

IN, OUTS, BACKLOG = "{b}:in", ("{b}:out0", "{b}:out1"), "{b}:backlog"
NS = "{b}:svc"
BATCH = 1000


def payload(i: int) -> str:
    return f"{i:08d}-" + "x" * 91


async def fill(r: Redis, count: int) -> None:
    chunk = 5000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        await r.lpush(BACKLOG, *[payload(start + i) for i in range(n)])


async def drain(r: Redis, count: int, tracking: Tracking | None) -> float:
    await r.flushall()
    await fill(r, count)
    options = MoveOptions(source=IN, targets=OUTS, batch=BATCH, tracking=tracking)
    mover = Mover(r, options, Metrics.disabled())
    await r.rename(BACKLOG, IN)
    began = time.perf_counter()
    moved = 0
    while (step := await mover.step()).moved:
        moved += step.moved
    elapsed = time.perf_counter() - began
    assert moved == count
    assert int(await r.llen(OUTS[1])) == count
    if tracking is not None:
        assert int(await r.hlen(tracking.keys.xids)) == count, "every message tracked"
    return count / elapsed


async def monitor_done(r: Redis, count: int, keys: MessageKeys) -> float:
    """Report every tracked message done (by xid) and time the monitor's done step."""
    chunk = 5000
    for start in range(0, count, chunk):
        xids = [message_xid(payload(start + i))[0] for i in range(min(chunk, count - start))]
        await r.lpush(keys.done, *xids)
    monitor = Monitor(r, keys, batch=BATCH)
    began = time.perf_counter()
    done = 0
    while (step := await monitor.step()).done:
        done += step.done
    elapsed = time.perf_counter() - began
    assert done == count, f"{done} of {count} done"
    assert int(await r.hget(keys.metrics("done"), "count") or 0) == count
    return count / elapsed


def start_service(url: str, count: int, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    args = ["mpush", "--redis", url, "--in", IN, "--out", OUTS[0], "--out", OUTS[1]]
    args += ["--service-namespace", NS, "--message-capacity", str(count), "--log-level", "WARNING"]
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mpush", *args, *flags], stdout=out)


async def service(r: Redis, url: str, count: int, log: Path, *flags: str) -> float:
    """A real ``mpush mpush`` process draining the backlog (the rate counts from the rename)."""
    await r.flushall()
    await fill(r, count)
    proc = start_service(url, count, log, *flags)
    try:
        await wait_for(lambda: r.exists(f"{NS}:service:1"))
        began = time.perf_counter()
        await r.rename(BACKLOG, IN)
        await wait_for(lambda: _drained(r, count))
        return count / (time.perf_counter() - began)
    finally:
        proc.terminate()
        proc.wait(10)


async def _drained(r: Redis, count: int) -> bool:
    return int(await r.llen(OUTS[1])) >= count


async def wait_for(condition: Callable[[], Awaitable[object]], within: float = 60.0) -> None:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.002)
    raise TimeoutError("benchmark condition not met")


async def best(repeat: int, run: Callable[[], Awaitable[float]]) -> float:
    return max([await run() for _ in range(repeat)])


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    n, k = opts.messages, opts.repeat
    keys = MessageKeys(NS)
    plain = Tracking(keys, TrackingPolicy(capacity=n), "bench")
    retry = Tracking(keys, TrackingPolicy(capacity=n, max_deliveries=3), "bench")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), extra=("--appendonly", "no")).start()
        r = Redis.from_url(server.url)
        log = Path(tmp) / "mpush.log"
        try:
            untracked = await best(k, lambda: drain(r, n, None))
            tracked = await best(k, lambda: drain(r, n, plain))
            with_retry = await best(k, lambda: drain(r, n, retry))

            async def done_run() -> float:
                await drain(r, n, plain)
                return await monitor_done(r, n, keys)

            done = await best(k, done_run)
            svc_plain = await best(
                k, lambda: service(r, server.url, n, log, "--no-message-tracking")
            )
            svc_tracked = await best(k, lambda: service(r, server.url, n, log))
        finally:
            await r.aclose()
            server.stop()
    print(f"backlog {n:,} messages of 100 bytes → 2 outputs, batches of {BATCH}, best of {k}")
    print(f"(a) engine, untracked            {untracked:12,.0f} msgs/s")
    print(f"(b) engine, tracked (retry off)  {tracked:12,.0f} msgs/s")
    print(f"(c) engine, tracked (retry on)   {with_retry:12,.0f} msgs/s")
    print(f"(d) monitor, done reports        {done:12,.0f} msgs/s")
    print(f"(e) mpush service, untracked     {svc_plain:12,.0f} msgs/s")
    print(f"(f) mpush service, tracked       {svc_tracked:12,.0f} msgs/s")
    print(f"engine  tracked / untracked          {tracked / untracked:6.2f}   (target >= 0.30)")
    print(f"engine  tracked with retry / untracked {with_retry / untracked:4.2f}")
    print(f"service tracked / untracked          {svc_tracked / svc_plain:6.2f}   (target >= 0.30)")


if __name__ == "__main__":
    asyncio.run(main())
