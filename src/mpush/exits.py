"""The exit codes of every ``mpush`` process, named and chosen here only.

Processes exit with an ``Exit``; a supervisor (``mpush demo``, an rcontrol agent) reads a child's
code with ``describe`` and ``restartable``. ``for_error`` is the one place that maps an error to
its code.
"""

from __future__ import annotations

import contextlib
import signal
from enum import IntEnum

from mpush.errors import ConfigError, FencedError, RedisUnavailableError

__all__ = ["Exit", "describe", "for_error", "restartable"]


class Exit(IntEnum):
    OK = 0  # a clean stop: a signal, a remote shutdown, the work done
    FAILURE = 1  # an unexpected failure; ndeploy: a failed deploy; a supervisor: a lost child
    CONFIG = 2  # bad configuration or usage: restarting cannot help
    UNAVAILABLE = 69  # Redis unreachable at startup (EX_UNAVAILABLE)
    FENCED = 75  # our registration was taken over (EX_TEMPFAIL): a fresh instance may start
    NO_ANSWER = 124  # ndeploy: no request or response within the wait (like timeout(1))
    SECOND_SIGNAL = 130  # a second SIGTERM/SIGINT: stopped at once

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    Exit.OK: "clean stop",
    Exit.FAILURE: "failure",
    Exit.CONFIG: "bad configuration",
    Exit.UNAVAILABLE: "Redis unreachable",
    Exit.FENCED: "fenced",
    Exit.NO_ANSWER: "no answer within the wait",
    Exit.SECOND_SIGNAL: "second signal",
}


def for_error(exc: BaseException) -> Exit:
    """The code a process ends with when ``exc`` stops it."""
    if isinstance(exc, ConfigError):
        return Exit.CONFIG
    if isinstance(exc, RedisUnavailableError):
        return Exit.UNAVAILABLE
    if isinstance(exc, FencedError):
        return Exit.FENCED
    return Exit.FAILURE


def restartable(code: int) -> bool:
    """False for the codes a restart cannot fix (bad configuration)."""
    return code != Exit.CONFIG


def describe(code: int) -> str:
    """``code 2 (bad configuration)``, ``killed by SIGKILL``, …"""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    if code in _MEANINGS and code != Exit.OK:
        return f"code {code} ({Exit(code).meaning})"
    return f"code {code}"
