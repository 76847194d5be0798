"""Benchmark: ndeploy's overhead over doing the same deploy steps by hand, in one run.

(a) deploy latency: the median of N deploys of a tiny package (clone, venv, pip install, no
    network) done by hand with subprocess calls, against the median request → response time of a
    real `mpush ndeploy serve` process doing the same steps;
(b) queue throughput: M requests for a URL outside the allowlist (claimed, refused, answered: no
    subprocess), against a bare loop doing the minimal reliable claim and answer (BLMOVE into an
    in-flight list, then one MULTI: LREM, HSET response, LPUSH notification).
Prints the figures and the ratios. Uses a private redis-server on a free port.

    .venv/bin/python bench/ndeploy.py [--deploys 5] [--requests 300]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# As in bench/mpush.py: take this directory off the path so "mpush" names the package; the repo
# root goes on it for the test helper that makes the git repository.
_HERE = Path(__file__).parent.resolve()
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import redis  # noqa: E402
from tests.ndeploy_repos import make_repos  # noqa: E402

from mpush.orchestration.redisserver import RedisServer  # noqa: E402

NS = "b:ndeploy"


def by_hand(url: str, dest: Path) -> float:
    began = time.perf_counter()
    run(["git", "clone", "--quiet", "--", url, str(dest)])
    run([sys.executable, "-m", "venv", "--without-pip", str(dest / ".venv")])
    pip = [sys.executable, "-m", "pip", "--python", str(dest / ".venv" / "bin" / "python")]
    run([*pip, "install", "--quiet", "--disable-pip-version-check", "--no-index", str(dest)])
    return time.perf_counter() - began


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)


def submit(client: redis.Redis, fields: dict[str, str]) -> int:
    request_id = int(client.incr(f"{NS}:req:id"))
    client.hset(f"{NS}:req:{request_id}", mapping=fields)
    client.lpush(f"{NS}:req", request_id)
    return request_id


def wait_done(client: redis.Redis, request_id: int) -> None:
    if client.blpop([f"{NS}:res:{request_id}:done"], 120) is None:
        raise SystemExit(f"no response to request {request_id}")


def bare_queue(client: redis.Redis, count: int) -> float:
    """The minimal reliable claim and answer, one request at a time, in this process."""
    for _ in range(count):
        client.lpush("bare:req", "1")
    began = time.perf_counter()
    for _ in range(count):
        request_id = client.blmove("bare:req", "bare:inflight", 1, "RIGHT", "LEFT")
        client.hgetall(f"bare:req:{request_id}")
        with client.pipeline(transaction=True) as tx:
            tx.lrem("bare:inflight", 1, request_id)
            tx.hset(f"bare:res:{request_id}", mapping={"error": "refused", "failedStep": "allow"})
            tx.lpush(f"bare:res:{request_id}:done", "error")
            tx.execute()
    return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deploys", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ndeploy-") as tmp:
        base = Path(tmp)
        repos = make_repos(base / "repos")
        url = repos.url(repos.hello)
        hand = [by_hand(url, base / "hand" / str(i)) for i in range(options.deploys)]
        server = RedisServer(base / "redis").start()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        args = ["ndeploy", "serve", "--redis", server.url, "--service-namespace", NS]
        args += ["--deploy-root", str(base / "deploys"), "--allow", repos.prefix]
        args += ["--no-venv-pip", "--pip-arg=--no-index", "--keep", "2", "--log-level", "ERROR"]
        service = subprocess.Popen(
            [sys.executable, "-m", "mpush", *args],
            stdin=subprocess.DEVNULL,
        )
        try:
            served = []
            for _ in range(options.deploys):
                began = time.perf_counter()
                wait_done(client, submit(client, {"git": url}))
                served.append(time.perf_counter() - began)
            ids = [
                submit(client, {"git": "https://example.invalid/x"})
                for _ in range(options.requests)
            ]
            began = time.perf_counter()
            for request_id in ids:
                wait_done(client, request_id)
            queue_rate = options.requests / (time.perf_counter() - began)
            bare_rate = bare_queue(client, options.requests)
        finally:
            service.terminate()
            service.wait(30)
            client.close()
            server.stop()
    hand_s, served_s = statistics.median(hand), statistics.median(served)
    print(f"deploy by hand (clone + venv + pip):  median {hand_s:6.2f} s over {len(hand)}")
    print(f"ndeploy request -> response:          median {served_s:6.2f} s over {len(served)}")
    print(f"  ratio ndeploy / by hand:            {served_s / hand_s:6.2f}x")
    print(f"bare claim + answer loop:             {bare_rate:8.0f} req/s")
    print(f"ndeploy refused requests:             {queue_rate:8.0f} req/s")
    print(f"  ratio ndeploy / bare:               {queue_rate / bare_rate:6.2f}x")


if __name__ == "__main__":
    main()
