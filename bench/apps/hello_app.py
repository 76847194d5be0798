"""The apps of the HTTP benchmarks: the same reply served directly by uvicorn and as a handler."""

from __future__ import annotations

from typing import Any

from mpush.http import Request, Response

BODY = b"hello world\n"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"12")]


async def app(scope: Any, receive: Any, send: Any) -> None:
    """A hello-world ASGI app: the direct-uvicorn baseline."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def hello(request: Request) -> Response:
    """The same reply as a handler behind hgateway → hrouter."""
    return Response(request.id, 200, {"content-type": "text/plain; charset=utf-8"}, BODY)
