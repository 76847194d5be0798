"""One error hierarchy for mpush: permanent errors stop a service, transient ones are retried.

Exit codes are chosen only in ``cli``; each error carries the code it maps to.
"""

from __future__ import annotations


class MpushError(Exception):
    """Base of every error mpush raises on purpose."""

    exit_code = 1


class ConfigError(MpushError):
    """A setting is unknown or has a bad value. Permanent: fix the configuration."""

    exit_code = 2

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key
        self.problem = problem


class RedisUnavailableError(MpushError):
    """Redis could not be reached within the startup timeout."""

    exit_code = 69  # EX_UNAVAILABLE


class FencedError(MpushError):
    """Our registration was changed by another instance: we must not go on working."""

    exit_code = 75  # EX_TEMPFAIL: a supervisor may start a fresh instance
