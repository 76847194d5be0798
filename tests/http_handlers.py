"""Handlers the HTTP tests run with ``mpush handler --handler tests.http_handlers:NAME``."""

from __future__ import annotations

import asyncio
import json
import os

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
