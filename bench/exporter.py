"""Benchmark: what a scrape of ``mpush exporter`` costs Redis, and how many it answers, in one run.

A namespace of --instances registrations (each naming an in and an out list) and --metrics metrics
hashes (histograms and counters) on a private redis-server, then:
  (a) baseline: reading it one command at a time (the way ``mpush status`` read before);
  (b) reading it with ``mpush.status.collect`` (pipelined), in process;
  (c) a real exporter, --cache-ttl 0: a scrape reads Redis unless a read is under way already
      (concurrent scrapes share it);
  (d) the same exporter process with --cache-ttl 1 under a storm of --clients concurrent scrapers.
For (c) and (d): scrapes answered per second and Redis commands per scrape (INFO commandstats).
Each figure is the best of --repeat runs (the machine is shared). Prints the ratios.

    .venv/bin/python bench/exporter.py [--instances 100] [--metrics 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path: take it off before importing.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import httpx  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from mpush.keys import ServiceKeys  # noqa: E402
from mpush.orchestration.redisserver import RedisServer, free_port  # noqa: E402
from mpush.status.report import collect  # noqa: E402

NS = "{b}:ns"
SECONDS = 4.0


async def populate(r: Redis, instances: int, metrics: int) -> None:
    keys = ServiceKeys(NS)
    async with r.pipeline(transaction=False) as pipe:
        for i in range(1, instances + 1):
            pipe.hset(
                keys.instance(i),
                mapping={"service": f"svc{i % 7}", "host": "h", "pid": i, "started": 1.0,
                         "renewed": 1.0, "in": f"{{b}}:q{i}", "out": f"{{b}}:q{i + 1}"},
            )  # fmt: skip
            pipe.expire(keys.instance(i), 3600)
            pipe.rpush(keys.ids, i)
            pipe.lpush(f"{{b}}:q{i}", *range(i % 5 + 1))
        pipe.set(keys.counter, instances)  # the exporter registers after them
        for m in range(metrics):
            fields: dict[str, Any] = {"count": 100, "sum": 12.5, "max": 0.9, "errors": 3}
            fields.update({f"histo{k}": k + 1 for k in range(0, 101, 10)})
            pipe.hset(keys.metrics(f"metric{m}"), mapping=fields)
        await pipe.execute()


async def one_at_a_time(r: Redis) -> int:
    """The baseline read: a command per key, awaited in turn."""
    keys = ServiceKeys(NS)
    await r.time()
    queues: list[str] = []
    for raw in await r.lrange(keys.ids, 0, -1):
        data = await r.hgetall(keys.instance(raw.decode()))
        await r.ttl(keys.instance(raw.decode()))
        queues += [data[b"in"].decode(), data[b"out"].decode()]
    for queue in dict.fromkeys(queues):
        await r.llen(queue)
    found = 0
    async for key in r.scan_iter(match=keys.metrics_pattern, count=1000):
        await r.hgetall(key)
        found += 1
    return found


async def reads_per_second(read: Any) -> float:
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < SECONDS / 2:
        await read()
        count += 1
    return count / (time.perf_counter() - began)


def commands(r: Any) -> int:
    """Commands Redis has run so far (INFO commandstats)."""
    stats = r.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


async def storm(port: int, clients: int) -> int:
    """Scrapes answered by ``clients`` scrapers looping for SECONDS."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    answered = 0
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        deadline = time.perf_counter() + SECONDS

        async def scraper() -> None:
            nonlocal answered
            while time.perf_counter() < deadline:
                answer = await client.get(f"http://127.0.0.1:{port}/metrics")
                assert answer.status_code == 200
                answered += 1

        await asyncio.gather(*(scraper() for _ in range(clients)))
    return answered


def exporter_run(server: RedisServer, cache_ttl: str, clients: int) -> tuple[float, float]:
    """(scrapes/s, Redis commands per scrape) of a real exporter process."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpush", "exporter", "--redis", server.url, "--service-namespace",
         NS, "--port", str(port), "--cache-ttl", cache_ttl, "--log-level", "WARNING"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    sync = redis.Redis.from_url(server.url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        before = commands(sync)
        began = time.perf_counter()
        answered = asyncio.run(storm(port, clients))
        elapsed = time.perf_counter() - began
        spent = commands(sync) - before - 1  # less the INFO itself
        return answered / elapsed, spent / max(answered, 1)
    finally:
        proc.terminate()
        proc.wait(15)
        sync.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            r = Redis.from_url(server.url)

            async def measure() -> tuple[float, float]:
                await populate(r, args.instances, args.metrics)
                seq = max([await reads_per_second(lambda: one_at_a_time(r))
                           for _ in range(args.repeat)])  # fmt: skip
                piped = max([await reads_per_second(lambda: collect(r, NS))
                             for _ in range(args.repeat)])  # fmt: skip
                await r.aclose()
                return seq, piped

            seq, piped = asyncio.run(measure())
            uncached = max(
                (exporter_run(server, "0", args.clients) for _ in range(args.repeat)),
                key=lambda x: x[0],
            )
            cached = max(
                (exporter_run(server, "1", args.clients) for _ in range(args.repeat)),
                key=lambda x: x[0],
            )
        finally:
            server.stop()
    print(f"namespace: {args.instances} instances, {args.instances + 1} queues, "
          f"{args.metrics} metrics hashes; {args.clients} concurrent scrapers")  # fmt: skip
    print(f"(a) read one command at a time   {seq:8.1f} reads/s   (baseline)")
    print(f"(b) read pipelined (collect)     {piped:8.1f} reads/s   {piped / seq:5.2f}× (a)")
    print(f"(c) exporter, --cache-ttl 0      {uncached[0]:8.1f} scrapes/s "
          f"{uncached[1]:7.1f} Redis commands/scrape")  # fmt: skip
    print(f"(d) exporter, --cache-ttl 1      {cached[0]:8.1f} scrapes/s "
          f"{cached[1]:7.2f} Redis commands/scrape")  # fmt: skip
    print(
        f"    storm with the cache: {cached[0] / uncached[0]:5.2f}× the scrapes/s of (c), "
        f"{uncached[1] / max(cached[1], 1e-9):7.1f}× fewer Redis commands per scrape"
    )


if __name__ == "__main__":
    main()
