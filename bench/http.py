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

# This file shares its name with the standard library's ``http`` package, which it must therefore
# not import (nor anything that does, such as urllib.request): the probe below is a raw socket.
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, where bench/mpush.py would
# shadow the mpush package: take the directory off the path before importing the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from mpush.redisserver import RedisServer, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
NAMESPACE = "bench:http"


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


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
    port = free_port()
    with processes(tmp, direct_commands(port)):
        wait_http(port)
        results["direct"] = load(wrk, port, connections, duration)
        results["direct-1"] = load(wrk, port, 1, latency_duration)
    port = free_port()
    with processes(tmp, suite_commands(url, port)):
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


@contextmanager
def processes(tmp: Path, commands: list[list[str]]) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")])
    started: list[subprocess.Popen[bytes]] = []
    try:
        for index, command in enumerate(commands):
            log = (tmp / f"proc-{len(started)}-{index}.log").open("wb")
            started.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
        yield
    finally:
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_http(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answered 200 on port {port} within {timeout}s")


def load(wrk: str, port: int, connections: int, duration: float) -> Result:
    threads = min(2, connections)
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "10s",
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Result:
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _ms(_find(r"\s50%\s+([\d.]+\w+)", out))
    p99 = _ms(_find(r"\s99%\s+([\d.]+\w+)", out))
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(r"Socket errors:(.*)", out)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Result(rps, p50, p99, errors)


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"cannot read {pattern!r} in wrk's output:\n{text}")
    return match.group(1)


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


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
