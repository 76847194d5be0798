"""A consumer process for the tests: records every message it is handed on a list, then returns
(so the library acknowledges it). Killed with -9 between the two, a message is recorded but not
acknowledged: the recovery path must bring it back.

    python tests/consumer_worker.py URL QUEUE NAMESPACE RECORD LEASE [FAIL_PREFIX]

A message starting with FAIL_PREFIX raises instead (a failure, reported to the retry logic).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from mpush.connection import connect, parse_redis_url
from mpush.consumer import consume


async def main(url: str, queue: str, namespace: str, record: str, lease: float, fail: str) -> None:
    redis = connect(parse_redis_url(url))
    try:
        async with consume(
            redis, queue, namespace=namespace or None, lease=lease, pop_timeout=0.2
        ) as messages:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, messages.stop)
            print(f"consuming {queue} as {messages.id}", flush=True)
            async for msg in messages:
                async with msg:
                    await redis.lpush(record, msg.body)
                    if fail and msg.text.startswith(fail):
                        raise ValueError(f"cannot handle {msg.text}")
    finally:
        await redis.aclose()
    print("stopped", flush=True)


if __name__ == "__main__":
    url, queue, namespace, record, lease = sys.argv[1:6]
    fail = sys.argv[6] if len(sys.argv) > 6 else ""
    asyncio.run(main(url, queue, namespace, record, float(lease), fail))
