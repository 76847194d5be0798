"""hgateway's response cache: the storage rules on their own, then through real processes."""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpush.http.cache import ResponseCache
from tests.conftest import RedisEnv
from tests.helpers import Spawner, wait_until
from tests.webparts import NS, Web

KEY = (b"host", b"/a", b"")
PUBLIC = [(b"cache-control", b"public, max-age=60"), (b"etag", b'"v1"')]


def cache(
    max_bytes: int = 1 << 20, max_age: float = 60.0, max_entry: int = 1 << 16
) -> ResponseCache:
    return ResponseCache(max_bytes, max_age, max_entry)


@pytest.mark.parametrize(
    ("pairs", "stored"),
    [
        (PUBLIC, True),
        ([(b"cache-control", b"s-maxage=5")], True),
        ([(b"cache-control", b"max-age=60")], False),  # not marked public: the handler's choice
        ([(b"cache-control", b"public, max-age=0")], False),
        ([(b"cache-control", b"public, max-age=60, private")], False),
        ([(b"cache-control", b"public, no-store, max-age=60")], False),
        ([(b"cache-control", b"public, no-cache, max-age=60")], False),
        ([*PUBLIC, (b"set-cookie", b"a=1")], False),
        ([*PUBLIC, (b"vary", b"*")], False),
        ([(b"etag", b'"v1"')], False),
        ([(b"cache-control", b"public, max-age=soon")], False),
    ],
)
def test_what_is_stored(pairs: list[tuple[bytes, bytes]], stored: bool) -> None:
    kept = cache()
    assert kept.store("GET", KEY, {}, 200, pairs, b"body") is stored
    assert (kept.lookup("GET", KEY, {}) is not None) is stored


def test_only_whole_answers_to_plain_gets_are_stored() -> None:
    kept = cache()
    assert not kept.store("GET", KEY, {}, 404, PUBLIC, b"body")
    assert not kept.store("GET", KEY, {}, 206, PUBLIC, b"body")
    assert not kept.store("HEAD", KEY, {}, 200, PUBLIC, b"")
    assert not kept.store("GET", KEY, {b"range": b"bytes=0-1"}, 200, PUBLIC, b"body")
    assert not kept.store("GET", KEY, {b"authorization": b"Basic eDp5"}, 200, PUBLIC, b"body")
    assert not kept.store("GET", KEY, {b"cache-control": b"no-store"}, 200, PUBLIC, b"body")
    assert len(kept) == 0


def test_hits_carry_age_head_has_no_body_and_validators_give_304() -> None:
    kept = cache()
    pairs = [*PUBLIC, (b"last-modified", b"Sat, 28 Nov 2026 02:00:00 GMT")]
    kept.store("GET", KEY, {}, 200, [*pairs, (b"content-length", b"4")], b"body")
    hit = kept.lookup("GET", KEY, {})
    assert hit is not None
    assert (hit.status, hit.body) == (200, b"body")
    assert (b"age", b"0") in hit.pairs
    head = kept.lookup("HEAD", KEY, {})
    assert head is not None
    assert (head.status, head.body) == (200, b"")
    for conditional in (
        {b"if-none-match": b'"v1"'},
        {b"if-none-match": b'"v0", W/"v1"'},
        {b"if-none-match": b"*"},
        {b"if-modified-since": b"Sat, 28 Nov 2026 02:00:00 GMT"},
        {b"if-modified-since": b"Sun, 29 Nov 2026 02:00:00 GMT"},
    ):
        not_modified = kept.lookup("GET", KEY, conditional)
        assert not_modified is not None, conditional
        assert not_modified.status == 304, conditional
        assert not_modified.body == b""
        assert b"content-length" not in dict(not_modified.pairs)
    for changed in (
        {b"if-none-match": b'"v0"'},
        {b"if-modified-since": b"Fri, 27 Nov 2026 02:00:00 GMT"},
        {b"if-none-match": b'"v0"', b"if-modified-since": b"Sun, 29 Nov 2026 02:00:00 GMT"},
    ):
        whole = kept.lookup("GET", KEY, changed)
        assert whole is not None, changed
        assert whole.status == 200, changed


def test_requests_that_must_reach_the_handler_are_not_answered() -> None:
    kept = cache()
    kept.store("GET", KEY, {}, 200, PUBLIC, b"body")
    for bypass in (
        {b"cache-control": b"no-cache"},
        {b"cache-control": b"max-age=0"},
        {b"pragma": b"no-cache"},
        {b"range": b"bytes=0-1"},
        {b"authorization": b"Bearer t"},
    ):
        assert kept.lookup("GET", KEY, bypass) is None, bypass
    assert kept.lookup("GET", (b"host", b"/b", b""), {}) is None
    assert kept.lookup("GET", (b"other", b"/a", b""), {}) is None


def test_vary_keeps_one_answer_per_variant() -> None:
    kept = cache()
    pairs = [*PUBLIC, (b"vary", b"Accept-Encoding")]
    kept.store("GET", KEY, {b"accept-encoding": b"gzip"}, 200, pairs, b"zipped")
    kept.store("GET", KEY, {}, 200, pairs, b"plain")
    zipped = kept.lookup("GET", KEY, {b"accept-encoding": b"gzip"})
    plain = kept.lookup("GET", KEY, {})
    assert zipped is not None
    assert zipped.body == b"zipped"
    assert plain is not None
    assert plain.body == b"plain"
    assert kept.lookup("GET", KEY, {b"accept-encoding": b"br"}) is None
    kept.store("GET", KEY, {}, 200, pairs, b"plain, newer")
    newer = kept.lookup("GET", KEY, {})
    assert len(kept) == 2
    assert newer is not None
    assert newer.body == b"plain, newer"


def test_unsafe_methods_drop_the_url_and_entries_expire() -> None:
    kept = cache(max_age=0.05)
    kept.store("GET", KEY, {}, 200, PUBLIC, b"body")
    assert kept.lookup("GET", KEY, {}) is not None
    kept.store("POST", KEY, {}, 200, [], b"")
    assert kept.lookup("GET", KEY, {}) is None
    assert kept.size == 0
    kept.store("GET", KEY, {}, 200, PUBLIC, b"body")
    wait_until(lambda: kept.lookup("GET", KEY, {}) is None, timeout=2, message="expiry")
    assert kept.size == 0


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3000)), max_size=200))
def test_the_byte_budget_holds_and_the_newest_stays(stores: list[tuple[int, int]]) -> None:
    kept = cache(max_bytes=20_000, max_entry=5_000)
    for url, length in stores:
        key = (b"h", b"/%d" % url, b"")
        if kept.store("GET", key, {}, 200, PUBLIC, b"x" * length):
            hit = kept.lookup("GET", key, {})
            assert hit is not None
            assert len(hit.body) == length
        assert 0 <= kept.size <= 20_000
    total = 0
    for url in range(31):
        hit = kept.lookup("GET", (b"h", b"/%d" % url, b""), {})
        total += len(hit.body) if hit is not None else 0
    assert total <= kept.size


def test_through_the_gateway_hits_skip_the_handler_until_the_cap(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    web = Web(standalone_env, spawn)
    web.gateway("--cache-max-age", "1")
    web.router(routes=["^/cached {w}:cached cached"])
    web.handler("cached", "{w}:cached")
    web.wait_started()
    url = web.url("/cached?cc=public,max-age=60")
    wait_until(lambda: httpx.get(url, timeout=5).status_code == 200, message="serving")

    with httpx.Client(timeout=5) as client:
        first = client.get(url)
        again = client.get(url)
        assert again.text == first.text, "the second answer came from the cache"
        assert "age" in again.headers
        assert client.get(url, headers={"if-none-match": '"v1"'}).status_code == 304
        head = client.head(url)
        assert head.status_code == 200
        assert head.content == b""
        fresh = client.get(url, headers={"cache-control": "no-cache"})
        assert fresh.text != first.text, "no-cache reaches the handler"
        began = time.monotonic()
        renewed = wait_until(
            lambda: (r := client.get(url)).text not in (first.text, fresh.text) and r,
            timeout=5,
            message="a new answer once the cached one is a second old",
        )
        assert time.monotonic() - began < 3
        assert renewed.status_code == 200

        for not_public in ("cc=max-age=60", "cc=public,max-age=60&cookie=a%3D1", ""):
            plain = web.url(f"/cached?{not_public}")
            assert client.get(plain).text != client.get(plain).text, not_public

        assert client.get(url).text == client.get(url).text
        before = client.get(url).text
        client.post(url)
        assert client.get(url).text != before, "a POST drops what was cached for the URL"

    wait_until(
        lambda: int(standalone_env.client.hget(f"{NS}:metrics:hgateway", "cache_hit") or 0) >= 3,
        message="cache hits counted",
    )


def test_the_cache_can_be_turned_off(standalone_env: RedisEnv, spawn: Spawner) -> None:
    web = Web(standalone_env, spawn)
    web.gateway("--cache-bytes", "0")
    web.router(routes=["^/cached {w}:cached cached"])
    web.handler("cached", "{w}:cached")
    web.wait_started()
    url = web.url("/cached?cc=public,max-age=60")
    wait_until(lambda: httpx.get(url, timeout=5).status_code == 200, message="serving")
    with httpx.Client(timeout=5) as client:
        assert client.get(url).text != client.get(url).text
