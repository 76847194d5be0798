"""HTTP benchmark: uvicorn serving hello-world directly vs the same reply through the suite.

    python bench/http.py [--duration 20] [--connections 64]

In one run, against a private redis-server it starts itself, with wrk as the load generator:
  1. direct:  uvicorn (uvloop, httptools) serving a hello-world ASGI app;
  2. suite:   hgateway → hrouter → handler (each its own process) serving the same reply.
Each is measured at ``--connections`` connections (throughput, p50, p99) and at 1 connection
(latency). Prints req/s, p50/p99, the ratios and the targets: suite ≥ 35% of direct req/s,
p99 ≤ 25 ms, added p50 at one connection ≤ 1.5 ms.
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

from wrk import Result, load, processes, wait_http  # noqa: E402

from mpush.orchestration.redisserver import RedisServer, free_port  # noqa: E402

APPS = HERE / "apps"
NAMESPACE = "bench:http"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--latency-duration", type=float, default=None, help="1-connection runs")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    latency_duration = args.latency_duration or max(3.0, args.duration / 4)
    with tempfile.TemporaryDirectory(prefix="mpush-bench-http-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            results = run_all(
                wrk, server.url, args.connections, args.duration, latency_duration, Path(tmp)
            )
        finally:
            server.stop()
    report(results, args.connections)
    return 0


def run_all(
    wrk: str, url: str, connections: int, duration: float, latency_duration: float, tmp: Path
) -> dict[str, Result]:
    results: dict[str, Result] = {}
    app_path = {"PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    with processes(tmp, direct_commands(port), app_path):
        wait_http(port)
        results["direct"] = load(wrk, port, connections, duration)
        results["direct-1"] = load(wrk, port, 1, latency_duration)
    port = free_port()
    with processes(tmp, suite_commands(url, port), app_path):
        wait_http(port)
        results["suite"] = load(wrk, port, connections, duration)
        results["suite-1"] = load(wrk, port, 1, latency_duration)
    return results


def direct_commands(port: int) -> list[list[str]]:
    return [
        [
            sys.executable,
            "-m",
            "uvicorn",
            "hello_app:app",
            "--app-dir",
            str(APPS),
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    ]


def suite_commands(url: str, port: int) -> list[list[str]]:
    mpush = [sys.executable, "-m", "mpush"]
    common = ["--redis", url, "--service-namespace", NAMESPACE, "--log-level", "WARNING"]
    return [
        [*mpush, "hrouter", *common, "--route", "^/ bench:hello hello"],
        [*mpush, "handler", *common, "--handler", "hello_app:hello", "--in", "bench:hello"],
        [*mpush, "hgateway", *common, "--port", str(port)],
    ]


def report(results: dict[str, Result], connections: int) -> None:
    direct, suite = results["direct"], results["suite"]
    one_direct, one_suite = results["direct-1"], results["suite-1"]
    print(f"\n{'':32} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for label, result in [
        (f"uvicorn direct, {connections} conns", direct),
        (f"hgateway→hrouter→handler, {connections}", suite),
        ("uvicorn direct, 1 conn", one_direct),
        ("hgateway→hrouter→handler, 1 conn", one_suite),
    ]:
        print(
            f"{label:32} {result.rps:10.0f} {result.p50_ms:8.2f} {result.p99_ms:8.2f} "
            f"{result.errors:7d}"
        )
    ratio = suite.rps / direct.rps if direct.rps else 0.0
    added = one_suite.p50_ms - one_direct.p50_ms
    print()
    print(f"suite / direct req/s:        {ratio:6.1%}   (target ≥ 35%)  {_ok(ratio >= 0.35)}")
    print(
        f"suite p99 at {connections} conns:       {suite.p99_ms:6.2f} ms (target ≤ 25 ms) "
        f"{_ok(suite.p99_ms <= 25)}"
    )
    print(f"added p50 at 1 connection:   {added:6.2f} ms (target ≤ 1.5 ms) {_ok(added <= 1.5)}")


def _ok(met: bool) -> str:
    return "met" if met else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())
