"""Handlers the HTTP tests run with ``mpush handler --handler tests.http_handlers:NAME``."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from urllib.parse import parse_qs

from mpush.http import Request, Response


def echo(request: Request) -> Response:
    """The request body back unchanged; what the handler saw in headers."""
    headers: dict[str, str | list[str]] = {
        "content-type": request.headers.get("content-type", "application/octet-stream"),
        "x-method": request.method,
        "x-url": request.url,
        "x-route": request.route or "",
        "x-params": json.dumps(request.params, sort_keys=True),
        "x-pid": str(os.getpid()),
        "x-big-length": str(len(request.headers.get("x-big", ""))),
        "x-client": request.headers.get("x-client", ""),
        "set-cookie": ["a=1", "b=2"],
    }
    return Response(request.id, 200, headers, request.body)


async def slow(request: Request) -> Response:
    """Answers after ``?sleep=SECONDS``."""
    seconds = float(request.query.partition("sleep=")[2] or "0")
    await asyncio.sleep(seconds)
    return Response.text(request.id, f"slept {seconds}\n")


def hello(request: Request) -> Response:
    return Response.text(request.id, "hello world\n")


def fails(request: Request) -> Response:
    raise RuntimeError("a handler bug with a secret in its message")


def expiry(path: str, stat: os.stat_result) -> int | None:
    """hfiler's programmable expiry in the tests: images live 42 s, the rest as configured."""
    return 42 if path.startswith("img/") else None


_answers = itertools.count(1)


def cached(request: Request) -> Response:
    """A numbered answer (so a test sees whether it came from here), with the Cache-Control,
    Vary and Set-Cookie of ``?cc=…&vary=…&cookie=…``."""
    query = {name: values[0] for name, values in parse_qs(request.query).items()}
    headers: dict[str, str | list[str]] = {"content-type": "text/plain", "etag": '"v1"'}
    for field, header in (("cc", "cache-control"), ("vary", "vary"), ("cookie", "set-cookie")):
        if field in query:
            headers[header] = query[field]
    body = f"{next(_answers)} {request.method} {request.headers.get('x-variant', '-')}\n"
    return Response(request.id, 200, headers, body.encode())


def sleepy(request: Request) -> Response:
    """Blocks 20 ms (a handler busy with work): one process answers at most 50 a second."""
    time.sleep(0.02)
    return Response.text(request.id, f"{os.getpid()}\n")
