"""Benchmark of the routing stages: each service against its own bare Lua script, in one run.

For mbalance, mdedupe and mthrottle a backlog of 200,000 messages is drained twice from the same
starting state on a private redis-server started here:

- bare:    the stage's Lua script (same keys, same arguments, batches of 1,000) called in a loop
           from this process, with no service around it — the most the stage's own per-message
           work allows;
- service: ``python -m mpush <stage>`` as a real process (registration, metrics, the stage loop),
           timed from the moment the backlog appears on its input until its outputs hold it all.

The bulk in-Redis move limit — ``lua/move.lua`` moving batches of 1,000 with one ``RPOP count``
and one multi-value ``LPUSH`` — is measured the same way, so mbalance's ratio to it comes from the
same run. Each figure is the best of ``--rounds`` runs (the machine may be shared).

Targets: each service >= 70% of its bare script; mbalance >= 25% of the bulk move limit.

    .venv/bin/python bench/stages.py [--messages 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, where bench/mpush.py would
# shadow the mpush package: take the directory off the path before importing the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from redis.asyncio import Redis  # noqa: E402

from mpush.connection import load_lua  # noqa: E402
from mpush.orchestration.redisserver import RedisServer  # noqa: E402

BATCH = 1000
NS = "{bench}:ns"
IN, FILL = "{bench}:in", "{bench}:fill"
OUTS = ("{bench}:out0", "{bench}:out1")


@dataclass(frozen=True)
class Case:
    """One stage: how to call its bare script, how to start it, and where the messages end up."""

    name: str
    script: str
    keys: Sequence[str]
    args: Sequence[str | int | float]
    flags: Sequence[str]
    outputs: Sequence[str]


CASES = [
    Case(
        "mbalance",
        "balance",
        [IN, f"{IN}:mbalance:cursor", *OUTS],
        [BATCH, 1, 0, 1, 1, 0, 1],
        ["--out", OUTS[0], "--out", OUTS[1]],
        OUTS,
    ),
    Case(
        "mdedupe",
        "dedupe",
        [IN, OUTS[0]],
        [BATCH, f"{IN}:mdedupe:seen:", 60_000],
        ["--out", OUTS[0], "--window", "60"],
        OUTS[:1],
    ),
    Case(
        "mthrottle",
        "throttle",
        [IN, OUTS[0], f"{IN}:mthrottle:bucket"],
        [BATCH, 1e9 / 1000, BATCH],
        ["--out", OUTS[0], "--rate", "1000000000", "--burst", str(BATCH)],
        OUTS[:1],
    ),
]
BULK = Case("bulk move", "move", [IN, OUTS[0]], [BATCH, 0, 0], [], OUTS[:1])


def payloads(count: int) -> list[str]:
    """A mix of the three xid kinds: decimal numbers, JSON with meta.id, and plain text."""
    kinds = (
        lambda i: str(10_000_000 + i),
        lambda i: json.dumps({"meta": {"id": f"req-{i}"}, "body": "x" * 40}),
        lambda i: f"message {i:07d} " + "y" * 40,
    )
    return [kinds[i % 3](i) for i in range(count)]


async def fill(redis: Redis, messages: list[str]) -> None:
    """A fresh database with the backlog on FILL, ready to be renamed onto the input at once."""
    await redis.flushall()
    async with redis.pipeline(transaction=False) as pipe:
        for start in range(0, len(messages), 10_000):
            pipe.lpush(FILL, *messages[start : start + 10_000])
        await pipe.execute()


async def bare(redis: Redis, case: Case, messages: list[str]) -> float:
    """msgs/s of the case's script called in a loop until the input is drained."""
    script = redis.register_script(load_lua(case.script))
    await fill(redis, messages)
    await script(keys=case.keys, args=case.args)  # load it outside the timing
    await redis.rename(FILL, IN)
    began = time.perf_counter()
    while True:
        result = await script(keys=case.keys, args=case.args)
        if int(result[0]) < BATCH:
            break
    elapsed = time.perf_counter() - began
    assert await redis.llen(IN) == 0
    return len(messages) / elapsed


async def service(redis: Redis, url: str, case: Case, messages: list[str], log: Path) -> float:
    """msgs/s of the real service draining the backlog."""
    await fill(redis, messages)
    argv = ["-m", "mpush", case.name, "--redis", url, "--in", IN, *case.flags]
    argv += ["--service-namespace", NS, "--batch", str(BATCH)]
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 20
        while not await redis.llen(f"{NS}:service:ids"):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"{case.name} did not start; see {log}")
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # let it settle into its blocking wait on the empty input
        await redis.rename(FILL, IN)
        began = time.perf_counter()
        moved = 0
        while moved < len(messages):
            await asyncio.sleep(0.001)
            moved = await total(redis, case.outputs)
        elapsed = time.perf_counter() - began
    finally:
        proc.terminate()
        await proc.wait()
    return len(messages) / elapsed


async def total(redis: Redis, keys: Sequence[str]) -> int:
    return sum([int(await redis.llen(key)) for key in keys])


async def run(count: int, rounds: int, cases: Sequence[Case]) -> int:
    messages = payloads(count)
    with tempfile.TemporaryDirectory(prefix="mpush-bench-") as tmp:
        server = RedisServer(Path(tmp) / "redis", extra=("--appendonly", "no")).start()
        redis = Redis(port=server.port)
        log = Path(tmp) / "services.log"
        try:
            best: dict[str, float] = {}
            for _ in range(rounds):
                for label, rate in await one_round(redis, server.url, messages, log, cases):
                    best[label] = max(best.get(label, 0.0), rate)
        finally:
            await redis.aclose()
            server.stop()
    return report(count, rounds, best, cases)


async def one_round(
    redis: Redis, url: str, messages: list[str], log: Path, cases: Sequence[Case]
) -> list[tuple[str, float]]:
    rates = [("bulk move", await bare(redis, BULK, messages))]
    for case in cases:
        rates.append((f"{case.name} bare", await bare(redis, case, messages)))
        rates.append((f"{case.name} service", await service(redis, url, case, messages, log)))
    return rates


def report(count: int, rounds: int, best: dict[str, float], cases: Sequence[Case]) -> int:
    print(f"routing stages, {count:,} messages, batches of {BATCH:,}, best of {rounds} rounds")
    print(f"{'':28}{'msgs/s':>12}")
    for label, rate in best.items():
        print(f"{label:28}{rate:>12,.0f}")
    print()
    failed = 0
    checks = [
        (f"{c.name} service / bare", best[f"{c.name} service"] / best[f"{c.name} bare"], 0.70)
        for c in cases
    ]
    if any(c.name == "mbalance" for c in cases):
        checks.append(
            ("mbalance service / bulk move", best["mbalance service"] / best["bulk move"], 0.25)
        )
    for label, ratio, target in checks:
        ok = ratio >= target
        failed += not ok
        verdict = "ok" if ok else "BELOW TARGET"
        print(f"{label:32}{ratio:>7.0%}   target >= {target:.0%}   {verdict}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stage", action="append", choices=[c.name for c in CASES])
    options = parser.parse_args()
    cases = [c for c in CASES if not options.stage or c.name in options.stage]
    sys.exit(asyncio.run(run(options.messages, options.rounds, cases)))


if __name__ == "__main__":
    main()
