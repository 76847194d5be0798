"""A worker for the messages mpush fans out: reliable, tracked, in a few lines.

    python examples/consumer.py --redis redis://127.0.0.1:6379/0 \\
        --queue '{demo}:out0' --namespace '{demo}:mpush'

Each message is expected to be JSON with a ``meta.id``; anything else fails, and a failed message
is redelivered (when the mover runs with ``--max-deliveries``) and finally dead-lettered on
``{demo}:mpush:message:dead``. A message handled without error is reported done, and its response
time shows in ``mpush status --service-namespace '{demo}:mpush'``. SIGTERM or Ctrl-C stops the
worker after the message in hand. See docs/consumer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from mpush.connection import connect, parse_redis_url
from mpush.consumer import consume


async def handle(text: str) -> None:
    order = json.loads(text)  # not JSON: raises, and the message takes the retry path
    print(f"handled {order['meta']['id']}", flush=True)


async def main(url: str, queue: str, namespace: str) -> None:
    redis = connect(parse_redis_url(url))
    try:
        async with consume(redis, queue, namespace=namespace) as messages:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, messages.stop)
            print(f"consuming {queue}", flush=True)
            async for msg in messages:
                async with msg:  # done when the block ends; a failure is reported, then go on
                    await handle(msg.text)
    finally:
        await redis.aclose()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A reliable, tracked mpush consumer.")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--queue", default="{demo}:out0")
    parser.add_argument("--namespace", default="{demo}:mpush")
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.queue, args.namespace))
