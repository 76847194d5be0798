"""What a namespace holds, read from Redis: registered instances, queue lengths, metrics, message
tracking. Read-only; rendered by ``mpush.cli.status`` and served by the exporter."""
