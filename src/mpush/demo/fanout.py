"""``mpush demo --fanout``: mpush fanning out three messages, end to end, with real processes.

Starts a private redis-server (unless a Redis URL is given), runs ``mpush mpush`` as a child
process, pushes ``one two three`` into ``demo:mpush:in``, shows them arriving in
``demo:mpush:out0`` and ``demo:mpush:out1`` and the ``status`` table, then stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis as redis_sync
from rich.console import Console

from mpush.cli.status import render_table
from mpush.connection import connect, parse_redis_url
from mpush.keys import ServiceKeys
from mpush.orchestration.redisserver import RedisServer
from mpush.status.report import collect

__all__ = ["run_fanout"]

NAMESPACE = "demo:mpush"
IN = "demo:mpush:in"
OUTS = ("demo:mpush:out0", "demo:mpush:out1")
_WAIT = 15.0


def run_fanout(redis_url: str | None) -> int:
    console = Console()
    with _redis(redis_url, console) as url:
        client = redis_sync.Redis.from_url(url, decode_responses=True)
        client.delete(IN, *OUTS)
        argv = [
            sys.executable,
            "-m",
            "mpush",
            "mpush",
            "--redis",
            url,
            "--in",
            IN,
            "--out",
            OUTS[0],
            "--out",
            OUTS[1],
            "--service-namespace",
            NAMESPACE,
        ]
        console.print(
            f"[bold]$ mpush mpush --redis {url} --in {IN} --out {OUTS[0]} "
            f"--out {OUTS[1]} --service-namespace {NAMESPACE}[/]"
        )
        service = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        try:
            if not _until(lambda: client.llen(ServiceKeys(NAMESPACE).ids) > 0, service):
                console.print("[red]mpush did not register in time[/]")
                return 1
            console.print(f"[bold]$ redis-cli lpush {IN} one two three[/]")
            client.lpush(IN, "one", "two", "three")
            if not _until(lambda: all(client.llen(out) == 3 for out in OUTS), service):
                console.print("[red]the messages did not arrive in time[/]")
                return 1
            for out in OUTS:
                console.print(f"[bold]$ redis-cli lrange {out} 0 -1[/]")
                for index, message in enumerate(client.lrange(out, 0, -1), start=1):
                    text = message if isinstance(message, str) else message.decode()
                    console.print(f'{index}) "{text}"')
            _until(lambda: client.exists(ServiceKeys(NAMESPACE).metrics("move")) > 0, service)
            client.close()
            console.print(f"[bold]$ mpush status --redis {url} --service-namespace {NAMESPACE}[/]")
            asyncio.run(_status(url, console))
        finally:
            code = _stop(service)
        console.print(f"mpush stopped with exit code {code}")
        return 0 if code == 0 else 1


@contextlib.contextmanager
def _redis(url: str | None, console: Console) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="mpush-demo-") as tmp:
        server = RedisServer(Path(tmp)).start()
        console.print(f"started a private redis-server on port {server.port}")
        try:
            yield server.url
        finally:
            server.stop()
            console.print("stopped the private redis-server")


def _until(condition: object, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


async def _status(url: str, console: Console) -> None:
    client = connect(parse_redis_url(url))
    try:
        render_table(await collect(client, NAMESPACE), console)
    finally:
        await client.aclose()


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
