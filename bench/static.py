"""Static file benchmark: nginx, uvicorn + Starlette StaticFiles, and hgateway → hrouter → hfiler.

    python bench/static.py [--duration 20] [--connections 64]

In one run, with wrk at ``--connections`` connections fetching one 1 KiB file:
  1. nginx:     Debian's nginx serving the file from disk (one worker, sendfile, no access log),
                started here as a foreground process with a config in a temporary directory;
  2. starlette: uvicorn (uvloop, httptools) serving Starlette's StaticFiles, one process;
  3. suite:     hgateway → hrouter → hfiler, each its own process, against a private
                redis-server; hfiler serves the file from Redis, and the gateway, as by
                default, reuses hfiler's ``public`` answer for up to a second (its response
                cache): most requests are answered by the gateway from memory;
  4. uncached:  the same with the gateway's cache off (``--cache-bytes 0``): every request
                travels gateway → Redis → hrouter → Redis → hfiler → Redis → gateway;
  5. routed:    uncached, the gateway routing by itself (its own ``--route``, no hrouter):
                gateway → Redis → hfiler → Redis → gateway;
  6. redis-1, redis-2: the Redis-backed baseline, a ten-line ASGI app on uvicorn that GETs the
                same 1 KiB from a redis-server (``apps/redis_app.py``), one worker and two.
Prints req/s, p50/p99 and errors of each, the ratios and the targets: suite ≥ 25% of nginx's
req/s, ≥ 2× Starlette StaticFiles; suite p99 ≤ 25 ms; the uncached paths ≥ 1.0× the two-worker
Redis-backed baseline.
Needs wrk and nginx (``scripts/ensure-deps bench`` installs both).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder comes first on sys.path, where mpush.py and http.py would
# stand for the mpush package and the standard library's http: put bench/common there instead.
sys.path[:] = [str(HERE / "common"), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]

import redis  # noqa: E402
from wrk import Result, load, processes, wait_http  # noqa: E402

from mpush.orchestration.redisserver import RedisServer, free_port  # noqa: E402

APPS = HERE / "apps"
NAMESPACE = "bench:static"
FILE = "file.txt"
BODY_KEY = "bench:static:body"
SIZE = 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", choices=list(LABELS), action="append")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if wrk is None or nginx is None:
        print("wrk and nginx are needed: scripts/ensure-deps bench", file=sys.stderr)
        return 2
    chosen = args.only or list(LABELS)
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="mpush-bench-static-") as name:
        tmp = Path(name)
        site = tmp / "site"
        site.mkdir()
        (site / FILE).write_bytes((b"0123456789abcdef" * 64)[:SIZE])
        runs = {
            "nginx": lambda: run_nginx(nginx, wrk, tmp, site, args),
            "starlette": lambda: run_starlette(wrk, tmp, site, args),
            "suite": lambda: run_suite(wrk, tmp, site, args),
            "uncached": lambda: run_suite(wrk, tmp, site, args, "--cache-bytes", "0"),
            "routed": lambda: run_suite(
                wrk, tmp, site, args, "--cache-bytes", "0", "--route", ROUTE, router=False
            ),
            "redis-1": lambda: run_redis(wrk, tmp, site, args, 1),
            "redis-2": lambda: run_redis(wrk, tmp, site, args, 2),
        }
        for label in chosen:
            results[label] = runs[label]()
            print(f"{label}: {results[label].rps:.0f} req/s", flush=True)
    report(results, args.connections)
    return 0


def run_nginx(nginx: str, wrk: str, tmp: Path, site: Path, args: argparse.Namespace) -> Result:
    port = free_port()
    prefix = tmp / "nginx"
    prefix.mkdir()
    config = prefix / "nginx.conf"
    config.write_text(nginx_config(prefix, site, port))
    command = [nginx, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")]
    with processes(tmp, [command]):
        wait_http(port, f"/{FILE}")
        return load(wrk, port, args.connections, args.duration, f"/{FILE}")


def nginx_config(prefix: Path, site: Path, port: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read our temp dir
    temp_paths = "".join(
        f"  {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n"
        "  keepalive_requests 1000000;\n  keepalive_timeout 65;\n"
        "  types { text/plain txt; }\n  default_type application/octet-stream;\n"
        f"{temp_paths}"
        f"  server {{\n    listen 127.0.0.1:{port};\n    root {site};\n  }}\n"
        "}\n"
    )


def run_starlette(wrk: str, tmp: Path, site: Path, args: argparse.Namespace) -> Result:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "static_app:app", "--app-dir", str(APPS),
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    with processes(tmp, [command], {"BENCH_STATIC_ROOT": str(site)}):
        wait_http(port, f"/{FILE}")
        return load(wrk, port, args.connections, args.duration, f"/{FILE}")


ROUTE = "^/ bench:files files"


def run_suite(
    wrk: str, tmp: Path, site: Path, args: argparse.Namespace, *gateway: str, router: bool = True
) -> Result:
    server = RedisServer(tmp / "redis").start()
    try:
        port = free_port()
        mpush = [sys.executable, "-m", "mpush"]
        common = ["--redis", server.url, "--service-namespace", NAMESPACE, "--log-level", "WARNING"]
        commands = [
            [*mpush, "hfiler", *common, "--in", "bench:files", "--root", str(site)],
            [*mpush, "hgateway", *common, "--port", str(port), *gateway],
        ]
        if router:
            commands.insert(1, [*mpush, "hrouter", *common, "--route", ROUTE])
        with processes(tmp, commands):
            wait_http(port, f"/{FILE}")
            return load(wrk, port, args.connections, args.duration, f"/{FILE}")
    finally:
        server.stop()


def run_redis(wrk: str, tmp: Path, site: Path, args: argparse.Namespace, workers: int) -> Result:
    server = RedisServer(tmp / "redis").start()
    try:
        with redis.Redis.from_url(server.url) as client:
            client.set(BODY_KEY, (site / FILE).read_bytes())
        port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", "redis_app:app", "--app-dir", str(APPS),
            "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--workers", str(workers),
        ]  # fmt: skip
        with processes(tmp, [command], {"BENCH_REDIS": server.url, "BENCH_KEY": BODY_KEY}):
            wait_http(port, f"/{FILE}")
            return load(wrk, port, args.connections, args.duration, f"/{FILE}")
    finally:
        server.stop()


LABELS = {
    "nginx": "nginx (1 worker)",
    "starlette": "uvicorn + Starlette StaticFiles",
    "suite": "hgateway → hrouter → hfiler",
    "uncached": "the same, gateway cache off",
    "routed": "hgateway (routing) → hfiler, no cache",
    "redis-1": "uvicorn GET from Redis, 1 worker",
    "redis-2": "uvicorn GET from Redis, 2 workers",
}


def report(results: dict[str, Result], connections: int) -> None:
    labels = LABELS
    print(f"\n1 KiB file, {connections} connections")
    print(f"{'':34} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for key, result in results.items():
        print(
            f"{labels[key]:34} {result.rps:10.0f} {result.p50_ms:8.2f} {result.p99_ms:8.2f} "
            f"{result.errors:7d}"
        )
    print()
    suite = results.get("suite")
    if suite is not None:
        if "nginx" in results:
            ratio = suite.rps / results["nginx"].rps
            print(f"suite / nginx req/s:       {ratio:7.1%}   (target ≥ 25%)  {_ok(ratio >= 0.25)}")
        if "starlette" in results:
            ratio = suite.rps / results["starlette"].rps
            print(f"suite / Starlette req/s:   {ratio:7.2f}×  (target ≥ 2×)   {_ok(ratio >= 2)}")
        print(
            f"suite p99:                 {suite.p99_ms:7.2f} ms (target ≤ 25 ms) "
            f"{_ok(suite.p99_ms <= 25)}"
        )
    uncached = results.get("uncached")
    if uncached is not None:
        for base, label in (("nginx", "nginx"), ("starlette", "Starlette")):
            if base in results:
                ratio = uncached.rps / results[base].rps
                shown = f"{ratio:7.1%}" if base == "nginx" else f"{ratio:7.2f}×"
                print(f"uncached / {label + ' req/s:':15} {shown}")
        print(f"uncached p99:              {uncached.p99_ms:7.2f} ms")
    for name in ("uncached", "routed"):
        path = results.get(name)
        for workers in (1, 2):
            base = results.get(f"redis-{workers}")
            if path is None or base is None or not base.rps:
                continue
            ratio = path.rps / base.rps
            target = f"(target ≥ 1.0×)  {_ok(ratio >= 1.0)}" if workers == 2 else ""
            label = f"{name} / Redis ASGI, {workers} worker{'s' if workers == 2 else ''}:"
            print(f"{label:36}{ratio:6.2f}×  {target}")


def _ok(met: bool) -> str:
    return "met" if met else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())
