"""HTTP benchmark: uvicorn serving hello-world directly vs the same reply through the suite.

    python bench/http.py [--duration 20] [--connections 64] [--only NAME ...]

In one run, against a private redis-server it starts itself, with wrk as the load generator:
  1. direct:   uvicorn (uvloop, httptools) serving a hello-world ASGI app;
  2. redis-1, redis-2: the Redis-backed baseline, a ten-line ASGI app on uvicorn that GETs a
               1 KiB answer from the same redis-server (``apps/redis_app.py``), with one worker
               and with two;
  3. suite:    hgateway → hrouter → handler (each its own process) serving the hello reply;
  4. routed:   hgateway → handler, the gateway routing by itself (its own ``--route``).
Each is measured at ``--connections`` connections (throughput, p50, p99), direct and suite also
at 1 connection (latency). Prints req/s, p50/p99, the ratios and the targets: suite ≥ 35% of
direct req/s, suite ≥ 1.0× the two-worker Redis-backed baseline, p99 ≤ 25 ms, added p50 at one
connection ≤ 1.5 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder comes first on sys.path, where this file would stand for the
# standard library's http and mpush.py for the mpush package: put bench/common there instead.
sys.path[:] = [str(HERE / "common"), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]

import redis  # noqa: E402
from wrk import Result, load, processes, wait_http  # noqa: E402

from mpush.orchestration.redisserver import RedisServer, free_port  # noqa: E402

APPS = HERE / "apps"
NAMESPACE = "bench:http"
BODY_KEY = "bench:http:body"
RUNS = ("direct", "redis-1", "redis-2", "suite", "routed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--latency-duration", type=float, default=None, help="1-connection runs")
    parser.add_argument("--only", choices=RUNS, action="append", help="run only these")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    latency_duration = args.latency_duration or max(3.0, args.duration / 4)
    chosen = args.only or list(RUNS)
    with tempfile.TemporaryDirectory(prefix="mpush-bench-http-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            with redis.Redis.from_url(server.url) as client:
                client.set(BODY_KEY, (b"0123456789abcdef" * 64)[:1024])
            results = run_all(
                wrk, server.url, chosen, args.connections, args.duration, latency_duration,
                Path(tmp),
            )  # fmt: skip
        finally:
            server.stop()
    report(results, args.connections)
    return 0


def run_all(
    wrk: str,
    url: str,
    chosen: list[str],
    connections: int,
    duration: float,
    latency_duration: float,
    tmp: Path,
) -> dict[str, Result]:
    results: dict[str, Result] = {}
    env = {
        "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
        "BENCH_REDIS": url,
        "BENCH_KEY": BODY_KEY,
    }
    for name in chosen:
        port = free_port()
        with processes(tmp, commands(name, url, port), env):
            wait_http(port)
            results[name] = load(wrk, port, connections, duration)
            if name in ("direct", "suite"):
                results[f"{name}-1"] = load(wrk, port, 1, latency_duration)
        print(f"{name}: {results[name].rps:.0f} req/s", flush=True)
    return results


def commands(name: str, url: str, port: int) -> list[list[str]]:
    if name == "direct":
        return [uvicorn("hello_app:app", port)]
    if name.startswith("redis-"):
        return [uvicorn("redis_app:app", port, "--workers", name.removeprefix("redis-"))]
    mpush = [sys.executable, "-m", "mpush"]
    common = ["--redis", url, "--service-namespace", NAMESPACE, "--log-level", "WARNING"]
    handler = [*mpush, "handler", *common, "--handler", "hello_app:hello", "--in", "bench:hello"]
    if name == "routed":
        return [handler, [*mpush, "hgateway", *common, "--port", str(port), *ROUTE]]
    return [
        [*mpush, "hrouter", *common, *ROUTE],
        handler,
        [*mpush, "hgateway", *common, "--port", str(port)],
    ]


ROUTE = ("--route", "^/ bench:hello hello")


def uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(APPS), "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        *extra,
    ]  # fmt: skip


LABELS = {
    "direct": "uvicorn hello, direct",
    "redis-1": "uvicorn GET from Redis, 1 worker",
    "redis-2": "uvicorn GET from Redis, 2 workers",
    "suite": "hgateway→hrouter→handler",
    "routed": "hgateway (routing)→handler",
    "direct-1": "uvicorn hello, direct, 1 conn",
    "suite-1": "hgateway→hrouter→handler, 1 conn",
}


def report(results: dict[str, Result], connections: int) -> None:
    print(f"\n{connections} connections unless said")
    print(f"{'':36} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, result in results.items():
        print(
            f"{LABELS[name]:36} {result.rps:10.0f} {result.p50_ms:8.2f} {result.p99_ms:8.2f} "
            f"{result.errors:7d}"
        )
    print()
    direct, suite = results.get("direct"), results.get("suite")
    if direct is not None and suite is not None:
        ratio = suite.rps / direct.rps if direct.rps else 0.0
        print(
            f"suite / direct req/s:          {ratio:6.1%}   (target ≥ 35%)    {_ok(ratio >= 0.35)}"
        )
    for name in ("suite", "routed"):
        path = results.get(name)
        for workers in ("1", "2"):
            base = results.get(f"redis-{workers}")
            if path is not None and base is not None and base.rps:
                ratio = path.rps / base.rps
                target = f"(target ≥ 1.0×)   {_ok(ratio >= 1.0)}" if workers == "2" else ""
                label = f"{name} / Redis ASGI, {workers} worker{'s' if workers == '2' else ''}:"
                print(f"{label:31}{ratio:6.2f}×  {target}")
    if suite is not None:
        print(
            f"suite p99 at {connections} conns:         {suite.p99_ms:6.2f} ms (target ≤ 25 ms) "
            f"{_ok(suite.p99_ms <= 25)}"
        )
    one_direct, one_suite = results.get("direct-1"), results.get("suite-1")
    if one_direct is not None and one_suite is not None:
        added = one_suite.p50_ms - one_direct.p50_ms
        print(
            f"added p50 at 1 connection:     {added:6.2f} ms (target ≤ 1.5 ms) {_ok(added <= 1.5)}"
        )


def _ok(met: bool) -> str:
    return "met" if met else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())
