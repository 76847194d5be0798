"""A consumer process for the tests: records every message it is handed on a list, then returns
(so the library acknowledges it). Killed with -9 between the two, a message is recorded but not
acknowledged: the recovery path must bring it back.

    python tests/consumer_worker.py URL QUEUE NAMESPACE RECORD LEASE [FAIL_PREFIX]
        [--concurrency N] [--delay SECONDS]

A message starting with FAIL_PREFIX raises instead (a failure, reported to the retry logic). With
``--concurrency`` above 1 the messages go to ``run(handler)``, N handlers side by side. With
``--delay`` each handler first works (sleeps) up to that many seconds, at random, then records
its message: many messages are in hand at any instant, and one killed in hand is not recorded
until a worker handles it again.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal

from mpush.connection import connect, parse_redis_url
from mpush.consumer import Message, consume


async def main(opts: argparse.Namespace) -> None:
    redis = connect(parse_redis_url(opts.url))

    async def handle(msg: Message) -> None:
        if opts.delay:
            await asyncio.sleep(random.uniform(0, opts.delay))
        await redis.lpush(opts.record, msg.body)
        if opts.fail and msg.text.startswith(opts.fail):
            raise ValueError(f"cannot handle {msg.text}")

    try:
        async with consume(
            redis,
            opts.queue,
            namespace=opts.namespace or None,
            lease=opts.lease,
            pop_timeout=0.2,
            concurrency=opts.concurrency,
        ) as messages:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, messages.stop)
            print(f"consuming {opts.queue} as {messages.id}", flush=True)
            if opts.concurrency > 1:
                await messages.run(handle)
            else:
                async for msg in messages:
                    async with msg:
                        await handle(msg)
    finally:
        await redis.aclose()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("url", "queue", "namespace", "record"):
        parser.add_argument(name)
    parser.add_argument("lease", type=float)
    parser.add_argument("fail", nargs="?", default="")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.0)
    asyncio.run(main(parser.parse_args()))
