"""hgateway's response cache: the storage rules on their own, then through real processes."""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpush.http.cache import Hit, ResponseCache, SharedDrops, Ticket
from tests.conftest import RedisEnv
from tests.helpers import Spawner, stopped, wait_until
from tests.webparts import NS, Web

KEY = (b"host", b"/a", b"")
PUBLIC = [(b"cache-control", b"public, max-age=60"), (b"etag", b'"v1"')]
Pairs = list[tuple[bytes, bytes]]


def cache(max_bytes: int = 1 << 20, max_age: float = 60.0, max_entry: int = 4096) -> ResponseCache:
    return ResponseCache(max_bytes, max_age, max_entry)


def ticket(
    kept: ResponseCache,
    method: str = "GET",
    headers: dict[bytes, bytes] | None = None,
    path: bytes = b"/a",
    raw: Pairs | None = None,
) -> Ticket:
    """What the gateway makes of a request to http://host<path> with ``headers``."""
    pairs = raw if raw is not None else [(b"host", b"host"), *(headers or {}).items()]
    return kept.begin(method, path, b"", pairs)


def put(
    kept: ResponseCache,
    pairs: Pairs,
    body: bytes = b"body",
    *,
    method: str = "GET",
    status: int = 200,
    headers: dict[bytes, bytes] | None = None,
) -> bool:
    return kept.store(ticket(kept, method, headers), status, pairs, body)


def get(
    kept: ResponseCache, method: str = "GET", headers: dict[bytes, bytes] | None = None
) -> Hit | None:
    return kept.lookup(ticket(kept, method, headers))


@pytest.mark.parametrize(
    ("pairs", "stored"),
    [
        (PUBLIC, True),
        ([(b"cache-control", b"s-maxage=5")], True),
        ([(b"Cache-Control", b"Public, Max-Age=60")], False),  # ASGI names are lower-case
        ([(b"cache-control", b"Public, Max-Age=60")], True),
        ([(b"cache-control", b"public, max-age=" + b"9" * 400)], True),  # as long as allowed
        ([(b"cache-control", b"max-age=60")], False),  # not marked public: the handler's choice
        ([(b"cache-control", b"public, max-age=0")], False),
        ([(b"cache-control", b"public, max-age=60, private")], False),
        ([(b"cache-control", b"public, no-store, max-age=60")], False),
        ([(b"cache-control", b'public, no-cache="set-cookie", max-age=60')], False),
        ([*PUBLIC, (b"set-cookie", b"a=1")], False),
        ([*PUBLIC, (b"vary", b"*")], False),
        ([(b"etag", b'"v1"')], False),
        ([(b"cache-control", b"public, max-age=soon")], False),
    ],
)
def test_what_is_stored(pairs: Pairs, stored: bool) -> None:
    kept = cache()
    assert put(kept, pairs) is stored
    assert (get(kept) is not None) is stored


def test_only_whole_answers_to_plain_gets_are_stored() -> None:
    kept = cache()
    assert not put(kept, PUBLIC, status=404)
    assert not put(kept, PUBLIC, status=206)
    assert not put(kept, PUBLIC, b"", method="HEAD")
    assert not put(kept, PUBLIC, headers={b"range": b"bytes=0-1"})
    assert not put(kept, PUBLIC, headers={b"authorization": b"Basic eDp5"})
    assert not put(kept, PUBLIC, headers={b"cache-control": b"No-Store"})
    assert len(kept) == 0


def test_a_repeated_header_neither_uses_nor_fills_the_cache() -> None:
    """The handler sees "evil, victim" for two Host lines: an answer to that must not be kept
    under either."""
    kept = cache()
    twice = [(b"host", b"evil"), (b"host", b"host")]
    assert not kept.store(ticket(kept, raw=twice), 200, PUBLIC, b"<a href=//evil>")
    assert get(kept) is None
    put(kept, PUBLIC)
    assert kept.lookup(ticket(kept, raw=twice)) is None
    assert get(kept) is not None
    kept.store(ticket(kept, "POST", raw=twice), 200, [], b"")  # both hosts' URLs dropped
    assert get(kept) is None


def test_an_answer_begun_before_an_invalidation_is_not_stored() -> None:
    kept = cache()
    slow_get = ticket(kept)
    kept.store(ticket(kept, "PUT"), 204, [], b"")  # answered first
    assert not kept.store(slow_get, 200, PUBLIC, b"old")
    assert get(kept) is None
    assert put(kept, PUBLIC, b"new")  # begun after: kept
    other = cache()
    begun = [ticket(other, path=b"/%d" % n) for n in range(3)]
    for n in range(5000):  # more invalidations than remembered: older requests are refused
        other.store(ticket(other, "POST", path=b"/x%d" % n), 200, [], b"")
    assert not any(other.store(t, 200, PUBLIC, b"body") for t in begun)
    assert other.store(ticket(other, path=b"/1"), 200, PUBLIC, b"body")


def test_hits_carry_age_head_gets_the_get_answer_and_validators_give_304() -> None:
    kept = cache()
    pairs = [*PUBLIC, (b"last-modified", b"Sat, 28 Nov 2026 02:00:00 GMT")]
    put(kept, [(b"content-type", b"text/plain"), *pairs, (b"content-length", b"4")])
    hit = get(kept)
    assert hit is not None
    assert (hit.status, hit.body) == (200, b"body")
    assert (b"age", b"0") in hit.pairs
    head = get(kept, "HEAD")
    assert head is not None
    assert (head.status, head.body) == (200, b"body")  # the server sends its length, not it
    for conditional in (
        {b"if-none-match": b'"v1"'},
        {b"if-none-match": b'"v0", W/"v1"'},
        {b"if-none-match": b"*"},
        {b"if-modified-since": b"Sat, 28 Nov 2026 02:00:00 GMT"},
        {b"if-modified-since": b"Sun, 29 Nov 2026 02:00:00 GMT"},
    ):
        not_modified = get(kept, headers=conditional)
        assert not_modified is not None, conditional
        assert not_modified.status == 304, conditional
        assert not_modified.body == b""
        assert {name for name, _ in not_modified.pairs} == {
            b"cache-control", b"etag", b"last-modified", b"age"
        }  # fmt: skip
    for changed in (
        {b"if-none-match": b'"v0"'},
        {b"if-modified-since": b"Fri, 27 Nov 2026 02:00:00 GMT"},
        {b"if-none-match": b'"v0"', b"if-modified-since": b"Sun, 29 Nov 2026 02:00:00 GMT"},
    ):
        whole = get(kept, headers=changed)
        assert whole is not None, changed
        assert whole.status == 200, changed


def test_requests_that_must_reach_the_handler_are_not_answered() -> None:
    kept = cache()
    put(kept, PUBLIC)
    for bypass in (
        {b"cache-control": b"no-cache"},
        {b"cache-control": b"No-Cache"},
        {b"cache-control": b"max-age=0"},
        {b"pragma": b"no-cache"},
        {b"range": b"bytes=0-1"},
        {b"authorization": b"Bearer t"},
    ):
        assert get(kept, headers=bypass) is None, bypass
    assert get(kept, headers={b"cache-control": b"max-age=05"}) is not None
    assert kept.lookup(ticket(kept, path=b"/b")) is None
    assert kept.lookup(ticket(kept, raw=[(b"host", b"other")])) is None


def test_vary_keeps_one_answer_per_variant_the_newest_first() -> None:
    kept = cache()
    pairs = [*PUBLIC, (b"vary", b"Accept-Encoding")]
    put(kept, pairs, b"zipped", headers={b"accept-encoding": b"gzip"})
    put(kept, pairs, b"plain")
    zipped = get(kept, headers={b"accept-encoding": b"gzip"})
    plain = get(kept)
    assert zipped is not None
    assert zipped.body == b"zipped"
    assert plain is not None
    assert plain.body == b"plain"
    assert get(kept, headers={b"accept-encoding": b"br"}) is None
    put(kept, pairs, b"plain, newer")
    newer = get(kept)
    assert len(kept) == 2
    assert newer is not None
    assert newer.body == b"plain, newer"
    put(kept, PUBLIC, b"for everyone, newest")  # no Vary: answers every variant
    for headers in ({b"accept-encoding": b"gzip"}, {}):
        newest = get(kept, headers=headers)
        assert newest is not None
        assert newest.body == b"for everyone, newest"


def test_unsafe_methods_drop_the_url_and_entries_expire() -> None:
    kept = cache(max_age=0.05)
    put(kept, PUBLIC)
    assert get(kept) is not None
    put(kept, [], b"", method="POST")
    assert get(kept) is None
    assert kept.size == 0
    put(kept, PUBLIC)
    wait_until(lambda: get(kept) is None, timeout=2, message="expiry")
    assert kept.size == 0


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3000)), max_size=200))
def test_the_byte_budget_holds_and_the_newest_stays(stores: list[tuple[int, int]]) -> None:
    kept = cache(max_bytes=20_000, max_entry=5_000)
    for url, length in stores:
        if kept.store(ticket(kept, path=b"/%d" % url), 200, PUBLIC, b"x" * length):
            hit = kept.lookup(ticket(kept, path=b"/%d" % url))
            assert hit is not None
            assert len(hit.body) == length
        assert 0 <= kept.size <= 20_000
    total = 0
    for url in range(31):
        hit = kept.lookup(ticket(kept, path=b"/%d" % url))
        total += len(hit.body) if hit is not None else 0
    assert total <= kept.size


def start_cached(env: RedisEnv, spawn: Spawner, *gateway: str) -> tuple[Web, str]:
    """A gateway, a router and the ``cached`` handler; the web and a cacheable URL."""
    web = Web(env, spawn)
    web.gateway(*gateway)
    web.router(routes=["^/cached {w}:cached cached"])
    web.handler("cached", "{w}:cached")
    web.wait_started()
    url = web.url("/cached?cc=public,max-age=60")
    wait_until(lambda: httpx.get(url, timeout=5).status_code == 200, message="serving")
    return web, url


def test_through_the_gateway_hits_skip_the_handler_until_the_cap(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    web, url = start_cached(standalone_env, spawn, "--cache-max-age", "1")

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
    _, url = start_cached(standalone_env, spawn, "--cache-bytes", "0")
    with httpx.Client(timeout=5) as client:
        assert client.get(url).text != client.get(url).text


def test_a_url_dropped_by_one_gateway_is_dropped_by_the_others(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = Web(redis_env, spawn)
    for _ in range(2):
        web.gateway("--cache-max-age", "60")
    web.router(routes=["^/cached {w}:cached cached"])
    web.handler("cached", "{w}:cached")
    web.wait_started()
    path = "/cached?cc=public,max-age=60"
    for gateway in (0, 1):
        wait_until(lambda g=gateway: httpx.get(web.url(path, g), timeout=5).status_code == 200)
    # one site behind both gateways (as behind a load balancer): the same Host for both
    with httpx.Client(timeout=5, headers={"host": "site.example"}) as client:
        kept = [client.get(web.url(path, g)).text for g in (0, 1)]
        assert [client.get(web.url(path, g)).text for g in (0, 1)] == kept, "both cached"
        client.post(web.url(path, 0))
        assert client.get(web.url(path, 0)).text != kept[0], "dropped at once where it was posted"
        wait_until(
            lambda: client.get(web.url(path, 1)).text != kept[1],
            timeout=5,
            message="the other gateway drops it too (it would keep it 60 s)",
        )
    assert redis_env.client.xlen(f"{NS}:cache:dropped") >= 1


async def test_drops_told_while_redis_is_down_are_told_once_it_is_back(
    standalone_env: RedisEnv,
) -> None:
    from mpush.connection import connect, parse_redis_url

    client = connect(parse_redis_url(standalone_env.url), socket_timeout=2.0)
    here, there = cache(), cache()
    mine, theirs = SharedDrops("{w}:drops", "1"), SharedDrops("{w}:drops", "2")
    try:
        await mine.start(client)
        await theirs.start(client)
        there.store(ticket(there), 200, PUBLIC, b"old")
        with stopped(standalone_env.servers[0]):
            here.store(ticket(here, "PUT"), 204, [], b"")
            with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the outage raises
                await mine.swap(client, here)
            assert here.dropped == [KEY], "kept for the next swap"
        standalone_env.wait_healthy()
        await mine.swap(client, here)
        assert here.dropped == []
        assert get(there) is not None
        await theirs.swap(client, there)
        assert get(there) is None, "dropped on the other replica"
    finally:
        await client.aclose()
