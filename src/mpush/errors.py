"""One error hierarchy for mpush: permanent errors stop a service, transient ones are retried.

The exit code each error ends a process with is chosen in ``mpush.exits`` only.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FencedError",
    "MpushError",
    "RedisUnavailableError",
    "TransientError",
]


class MpushError(Exception):
    """Base of every error mpush raises on purpose."""


class ConfigError(MpushError):
    """A setting is unknown or has a bad value. Permanent: fix the configuration."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key
        self.problem = problem


class RedisUnavailableError(MpushError):
    """Redis could not be reached within the startup timeout."""


class FencedError(MpushError):
    """Our registration was changed by another instance: we must not go on working."""


class TransientError(MpushError):
    """Redis is out of reach for now, or answered "not now" (a lost connection, a timeout, a
    failover, OOM, BUSY, LOADING …): retried with backoff (``mpush.retry``), never fatal.

    ``mpush.connection.translated`` raises it from redis-py's errors; the original is its cause.
    """
