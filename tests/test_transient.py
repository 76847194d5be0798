"""Which failures the retry loops treat as transient (no Redis needed)."""

from __future__ import annotations

import pytest
import redis.exceptions as rex

from mpush.connection import is_transient


def raised_in(filename: str, exc_type: type[Exception]) -> BaseException:
    """An exception whose innermost frame is in ``filename``, as if raised by that module."""
    code = compile(f"raise {exc_type.__name__}('gone')", filename, "exec")
    try:
        exec(code, {})
    except exc_type as exc:
        return exc
    raise AssertionError("not raised")


def test_lost_connections_are_transient() -> None:
    assert is_transient(rex.ConnectionError("lost"))
    assert is_transient(rex.TimeoutError("slow"))
    assert not is_transient(rex.ResponseError("WRONGTYPE"))


@pytest.mark.parametrize("exc_type", [AttributeError, TypeError])
def test_a_connection_torn_down_inside_the_client_is_transient(exc_type: type[Exception]) -> None:
    """redis-py's asyncio client can report a connection closed under it as AttributeError
    (`self._writer` is None) or TypeError (the transport's callbacks are gone)."""
    assert is_transient(raised_in("/venv/site-packages/redis/asyncio/connection.py", exc_type))
    assert is_transient(raised_in("/usr/lib/python3.11/asyncio/selector_events.py", exc_type))


def test_a_transport_closed_under_uvloop_is_transient() -> None:
    """Under uvloop the same teardown surfaces as RuntimeError from the transport's handle."""
    assert is_transient(raised_in("uvloop/handles/handle.pyx", RuntimeError))


@pytest.mark.parametrize("exc_type", [AttributeError, TypeError, RuntimeError])
def test_the_same_errors_elsewhere_are_bugs(exc_type: type[Exception]) -> None:
    assert not is_transient(raised_in("/app/src/mpush/services/mbalance.py", exc_type))
    assert not is_transient(exc_type("no traceback"))
