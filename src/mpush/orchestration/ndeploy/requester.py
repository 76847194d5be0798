"""The requester's side of ndeploy: submit a request, wait for its response.

submit  ``INCR <ns>:req:id`` → id; then in one transaction ``HSET <ns>:req:<id>`` with the
        request's fields and ``LPUSH <ns>:req <id>``.
wait    ``BLPOP <ns>:res:<id>:done`` in short slices until the deadline; each slice also checks
        ``<ns>:res:<id>`` itself (the notification expires; the response does not), and reports
        the request's ``step`` so a terminal can show progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from mpush.connection import AnyRedis, describe_client, reply_text
from mpush.errors import TransientError
from mpush.keys import NdeployKeys
from mpush.retry import outage_of, retrying

__all__ = ["submit", "wait_for_response"]

log = logging.getLogger(__name__)

_SLICE = 1.0


async def submit(redis: AnyRedis, keys: NdeployKeys, fields: Mapping[str, str]) -> int:
    """Queue a request with ``fields`` (git, branch, commit, tag); return its id."""
    request_id = int(await redis.incr(keys.counter))
    async with redis.pipeline(transaction=True) as pipe:
        values: dict[str | bytes, str | bytes] = dict(fields.items())
        pipe.hset(keys.request(request_id), mapping=values)  # type: ignore[arg-type]
        pipe.lpush(keys.queue, str(request_id))
        await pipe.execute()
    return request_id


async def wait_for_response(
    redis: AnyRedis,
    keys: NdeployKeys,
    request_id: int,
    *,
    within: float,
    on_step: Callable[[str | None], None] | None = None,
) -> dict[str, str] | None:
    """The response hash once written, or None after ``within`` s. Redis outages are waited out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    outage = outage_of(describe_client(redis))
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        try:
            response, step = await retrying(
                lambda: _poll(redis, keys, request_id, min(_SLICE, deadline - loop.time())),
                outage=outage,
                deadline=deadline,
            )
        except TransientError:
            return None
        if response is not None:
            return response
        if on_step is not None:
            on_step(step)


async def _poll(
    redis: AnyRedis, keys: NdeployKeys, request_id: int, seconds: float
) -> tuple[dict[str, str] | None, str | None]:
    """One slice: (the response if written, the request's current step)."""
    wait: Any = max(seconds, 0.01)  # redis-py types it int; Redis takes decimals
    await redis.blpop([keys.done(request_id)], wait)
    raw = await redis.hgetall(keys.response(request_id))
    if raw:
        return {reply_text(k): reply_text(v) for k, v in raw.items()}, None
    return None, _text_or_none(await redis.hget(keys.request(request_id), "step"))


def _text_or_none(raw: object) -> str | None:
    return None if raw is None else reply_text(raw)
