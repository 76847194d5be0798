"""Pure functions: slots and hash tags, histogram buckets, backoff."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mpush
from mpush.connection import describe_url, parse_redis_url
from mpush.errors import ConfigError
from mpush.keys import check_same_slot, hash_tag, key_slot
from mpush.retry import Backoff
from mpush.runtime.metrics import histo_bucket

keys = st.text(alphabet="abc:{}xyz01", min_size=1, max_size=12)


def test_public_api_is_pinned() -> None:
    assert sorted(mpush.__all__) == [
        "ConfigError",
        "FencedError",
        "MpushError",
        "RedisUnavailableError",
        "__version__",
    ]


def test_key_slot_known_values() -> None:
    # Values from the Redis Cluster specification's CRC16 examples.
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")


@given(st.lists(keys, min_size=1, max_size=4))
def test_same_slot_check_agrees_with_slots(names: list[str]) -> None:
    same = len({key_slot(k) for k in names}) == 1
    if same:
        check_same_slot(names)
    else:
        with pytest.raises(ConfigError) as caught:
            check_same_slot(names)
        message = str(caught.value)
        assert all(name in message for name in names)
        assert "hash tag" in message


@given(st.lists(keys, min_size=2, max_size=4))
def test_suggested_fix_really_shares_a_slot(names: list[str]) -> None:
    try:
        check_same_slot(names)
    except ConfigError as exc:
        suggestion = str(exc).split("e.g. ", 1)[1].split(", ")
        assert len({key_slot(k) for k in suggestion}) == 1


def test_hash_tag() -> None:
    assert hash_tag("{demo}:in") == "demo"
    assert hash_tag("demo:in") is None
    assert hash_tag("{}:in") is None


@given(st.floats(min_value=0, max_value=1e6), st.floats(min_value=1e-3, max_value=1e6))
def test_histo_bucket_matches_definition(value: float, timeout: float) -> None:
    bucket = histo_bucket(value, timeout)
    k = int(bucket.removeprefix("histo"))
    assert k in range(0, 101, 10)
    if k == 100:
        assert value >= timeout * 0.9999999
    else:
        assert k / 100 * timeout <= value * 1.0000001
        assert value < (k + 10) / 100 * timeout * 1.0000001


def test_histo_bucket_edges() -> None:
    assert histo_bucket(0, 10) == "histo0"
    assert histo_bucket(0.99, 10) == "histo0"
    assert histo_bucket(1, 10) == "histo10"
    assert histo_bucket(9.99, 10) == "histo90"
    assert histo_bucket(10, 10) == "histo100"
    assert histo_bucket(50, 10) == "histo100"


@given(st.integers(min_value=0, max_value=60))
def test_backoff_is_capped_and_jittered(attempts: int) -> None:
    backoff = Backoff(base=0.05, cap=5.0, rng=random.Random(attempts))
    delays = [backoff.next_delay() for _ in range(attempts + 1)]
    assert all(0 < d <= 5.0 for d in delays)
    backoff.reset()
    assert backoff.next_delay() <= 0.05


def test_redis_urls() -> None:
    assert parse_redis_url("redis+cluster://h:7000").cluster
    assert parse_redis_url("redis+cluster://h:7000").url == "redis://h:7000"
    assert parse_redis_url("rediss://h:6380/1", cluster=True).cluster
    assert not parse_redis_url("unix:///tmp/redis.sock").cluster
    with pytest.raises(ConfigError, match="unix socket"):
        parse_redis_url("unix:///tmp/r.sock", cluster=True)
    with pytest.raises(ConfigError, match="scheme"):
        parse_redis_url("http://h")
    assert describe_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"


def test_outage_logged_once_per_episode_even_when_flapping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from mpush.retry import Outage

    clock = [100.0]
    outage = Outage("redis", logging.getLogger("t"), settle=2.0)
    with caplog.at_level(logging.WARNING), _fake_clock(clock):
        outage.failed(ConnectionError("down"))
        outage.failed(ConnectionError("down"))
        clock[0] = 105.0
        assert outage.recovered() == pytest.approx(5.0)
        assert outage.recovered() is None  # already over
        clock[0] = 105.5
        outage.failed(ConnectionError("flap"))  # within settle: the same episode goes on
        clock[0] = 106.0
        assert outage.recovered() == pytest.approx(6.0)
        clock[0] = 120.0
        outage.failed(ConnectionError("later"))  # a new episode
        assert outage.active
    messages = [record.getMessage() for record in caplog.records]
    assert sum("unavailable" in m for m in messages) == 2  # the first episode and the later one
    assert "redis back after 6.0s (3 failed attempts)" in messages


@contextlib.contextmanager
def _fake_clock(clock: list[float]) -> Iterator[None]:
    from unittest import mock

    with mock.patch("mpush.retry.time.monotonic", side_effect=lambda: clock[0]):
        yield


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "BUSY Redis is busy running a script.",
        "NOREPLICAS Not enough good replicas to write.",
        "LOADING Redis is loading the dataset",
    ],
)
def test_not_now_replies_are_transient(reply: str) -> None:
    from redis.exceptions import ResponseError

    from mpush.connection import is_transient

    assert is_transient(ResponseError(reply))
    assert not is_transient(
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    )


@pytest.mark.parametrize(
    "doc",
    [
        {"ts": "x"},
        {"ts": []},
        {"deadline": 1e20},
        {"deadline": float("nan")},
        {"deadline": True},
        {"deadline": -5},
    ],
)
def test_bad_times_in_a_request_are_message_errors(doc: dict[str, object]) -> None:
    import orjson

    from mpush.http.messages import MessageError, ReplyAddress, Request

    base = {"v": 1, "id": "r1", "method": "GET", "url": "/", "reply": "q:res", "deadline": 2e9}
    with pytest.raises(MessageError):
        Request.from_doc({**base, **doc})
    if "deadline" in doc:  # no registration for mdispatch either
        with pytest.raises(MessageError):
            ReplyAddress.read(orjson.dumps({**base, **doc}))


def test_router_sets_aside_a_request_whose_path_is_not_text() -> None:
    import orjson

    from mpush.http.messages import MessageError, RequestHead

    good = {"v": 1, "id": "r1", "method": "GET", "url": "/a", "reply": "q:res", "deadline": 2e9}
    assert RequestHead.read(orjson.dumps(good)).path == "/a"
    with pytest.raises(MessageError):
        RequestHead.read(orjson.dumps({**good, "path": 5}))
    with pytest.raises(MessageError):
        RequestHead.read(orjson.dumps({**good, "deadline": 1e20}))


async def test_a_failed_write_never_loses_the_batch_popped_with_it(standalone_env: Any) -> None:
    from mpush.connection import connect, parse_redis_url
    from mpush.runtime.batches import Writes, _write_and_pop
    from mpush.runtime.pinned import PinnedConnection

    standalone_env.client.set("w:wrong", "a string, not a list")
    standalone_env.client.lpush("w:q", "a", "b", "c")
    client = connect(parse_redis_url(standalone_env.url))
    try:
        writes = Writes()
        writes.push("w:wrong", "response")  # fails: WRONGTYPE
        writes.push("w:ok", "response")
        pinned = PinnedConnection(client)
        assert await _write_and_pop(pinned, writes, "w:q", 10) == [b"a", b"b", b"c"]
        await pinned.close()
        assert standalone_env.client.lrange("w:ok", 0, -1) == ["response"]
    finally:
        await client.aclose()


async def test_a_request_submitted_after_the_exchange_closed_gets_503_at_once() -> None:
    """A request that passed the drain check while its body streamed in must not wait forever
    on an exchange whose writer and deadline keeper have stopped."""
    import logging

    from mpush.http.exchange import Exchange
    from mpush.http.messages import Response
    from mpush.retry import Outage
    from mpush.runtime.metrics import Metrics

    exchange = Exchange(
        None,  # type: ignore[arg-type]  # never reached: nothing is pushed once closed
        queue="q",
        reply="q:res",
        id_prefix="t",
        batch=10,
        timeout=5.0,
        pop_timeout=0.1,
        metrics=Metrics.disabled(),
        outage=Outage("test", logging.getLogger("test")),
    )
    exchange.close()
    answers: list[Response] = []
    exchange.submit("t-1", b"{}", answers.append)
    assert [answer.status for answer in answers] == [503], "answered at once"
    assert not exchange.pending
