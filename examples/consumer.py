"""A worker for the messages mpush fans out: reliable, tracked, in a few lines.

    python examples/consumer.py --redis redis://127.0.0.1:6379/0 \\
        --queue '{demo}:out0' --namespace '{demo}:mpush' [--concurrency 8]

Each message is expected to be JSON with a ``meta.id``; anything else fails, and a failed message
is redelivered (when the mover runs with ``--max-deliveries``) and finally dead-lettered on
``{demo}:mpush:message:dead``. A message handled without error is reported done, and its response
time shows in ``mpush status --service-namespace '{demo}:mpush'``. ``--concurrency`` runs that many
handlers side by side. SIGTERM or Ctrl-C stops the worker after the messages in hand. See
docs/consumer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from mpush.connection import connect, parse_redis_url
from mpush.consumer import Message, consume


async def handle(msg: Message) -> None:
    """Done when it returns; when it raises, the failure is reported and the worker goes on."""
    order = json.loads(msg.text)  # not JSON: raises, and the message takes the retry path
    print(f"handled {order['meta']['id']}", flush=True)


async def main(url: str, queue: str, namespace: str, concurrency: int) -> None:
    redis = connect(parse_redis_url(url))
    try:
        async with consume(redis, queue, namespace=namespace, concurrency=concurrency) as messages:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, messages.stop)
            print(f"consuming {queue}", flush=True)
            await messages.run(handle)
    finally:
        await redis.aclose()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A reliable, tracked mpush consumer.")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--queue", default="{demo}:out0")
    parser.add_argument("--namespace", default="{demo}:mpush")
    parser.add_argument("--concurrency", type=int, default=1, help="handlers side by side")
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.queue, args.namespace, args.concurrency))
