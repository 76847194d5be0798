"""What the HTTP benchmarks share: child processes, a readiness probe, wrk runs and their figures.

Imported as ``wrk`` by the scripts in ``bench/``, which put this folder first on ``sys.path``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Result", "load", "parse_wrk", "processes", "wait_http"]


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@contextmanager
def processes(
    tmp: Path, commands: Sequence[Sequence[str]], env: Mapping[str, str] | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run ``commands`` (output to log files in ``tmp``); SIGTERM them all at the end."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
    full_env.update(env or {})
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            name = "-".join(Path(part).name for part in command[:4])
            with (tmp / f"{len(started)}-{name}.log").open("wb") as log:
                proc = subprocess.Popen(
                    list(command),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=full_env,
                )
            started.append(proc)
        yield started
    finally:
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_http(port: int, path: str = "/", timeout: float = 30.0) -> None:
    """Until ``GET path`` on 127.0.0.1:``port`` answers 200."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answered 200 to {path} on port {port} within {timeout}s")


def load(wrk: str, port: int, connections: int, duration: float, path: str = "/") -> Result:
    """One wrk run against 127.0.0.1:``port``."""
    threads = min(2, connections)
    command = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
        "--timeout", "10s", f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip
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
