"""The Redis-backed baseline of the HTTP benchmarks: a ten-line ASGI app that GETs its answer.

Serves the bytes of the key ``BENCH_KEY`` on the Redis at ``BENCH_REDIS`` (both set by the
benchmark); run under uvicorn with one or two workers.
"""

import os

import redis.asyncio as aioredis

client = aioredis.from_url(os.environ["BENCH_REDIS"])
KEY = os.environ["BENCH_KEY"]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = await client.get(KEY)
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
