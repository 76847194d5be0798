"""The demo's slow backend: ``GET /work``, served by ``mpush handler --handler
mpush.demo.work:handle`` (the ``work`` deployment of ``site/rcontrol.toml``).

Each request waits ``DELAY`` seconds — as a handler waiting on a database or another service would
— and answers with the pid of the process that served it. The deployment handles one request at
a time per instance, so one instance serves about 1 / DELAY requests a second: the demo's load
makes its queue grow, and more instances drain it.
"""

from __future__ import annotations

import asyncio
import os

from mpush.http.messages import Request, Response

__all__ = ["DELAY", "handle"]

DELAY = 0.05  # seconds each request waits


async def handle(request: Request) -> Response:
    await asyncio.sleep(DELAY)
    return Response.json(request.id, {"pid": os.getpid(), "waited": DELAY})
