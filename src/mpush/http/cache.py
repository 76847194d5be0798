"""hgateway's response cache: a small shared HTTP cache (RFC 9111, the part a gateway needs).

A handler that answers a ``GET`` with ``200`` and ``Cache-Control: public, max-age=N`` (or
``s-maxage=N``) says any shared cache may reuse the answer for N seconds. The gateway keeps such
answers in memory for ``min(N, cache_max_age)`` seconds and answers repeats itself, without a
round trip through Redis: "micro-caching". The default cap of one second bounds how stale a
gateway can be while still absorbing a burst of requests for the same asset; a changed file is
seen within that second.

Stored only: answers to ``GET`` without ``Authorization`` or ``Range``; status 200; ``public`` or
``s-maxage`` in Cache-Control and none of ``no-store``, ``no-cache``, ``private``; no
``Set-Cookie``; ``Vary`` not ``*``; a body within ``cache_max_entry`` bytes. ``Vary`` is honoured:
each variant is stored with the values of the request headers it names.

Served: ``GET`` and ``HEAD`` (the GET answer without its body), with an ``Age`` header; requests
with ``If-None-Match`` (weak comparison) or ``If-Modified-Since`` get 304 when the stored answer
matches. A request saying ``Cache-Control: no-cache`` (or ``max-age=0``, or ``Pragma: no-cache``)
goes through to the handler (and its answer refreshes the entry). An unsafe method (POST, PUT,
PATCH, DELETE) on a URL drops what is stored for it, and an answer to a request that began before
that is not stored. A request that repeats a header neither uses nor fills the cache: the handler
sees repeated values joined, and a cache keyed on one of them could be poisoned.

The cache is bounded by ``cache_bytes`` (bodies and headers), least recently used first out.
The URLs an unsafe method dropped wait in ``dropped`` for the gateway to tell its other replicas,
which drop them too (``invalidate(key, shared=False)``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mpush.connection import AnyRedis, reply_text
from mpush.http.files import not_modified, parse_http_date

__all__ = ["Hit", "ResponseCache", "SharedDrops", "Ticket"]

Headers = dict[bytes, bytes]  # one request's headers, names lower-case (as ASGI servers give them)
Pairs = list[tuple[bytes, bytes]]  # ASGI header pairs
Key = tuple[bytes, bytes, bytes]  # host, path, query

_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_LOOKUP = frozenset({"GET", "HEAD"})
_NOT_STORED = (b"no-store", b"no-cache", b"private")
# RFC 9110 §15.4.5: what a 304 carries of the 200 it stands for
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"etag", b"expires", b"last-modified", b"vary"}
)
_OVERHEAD = 200  # bytes an entry costs beyond its body and headers, roughly
_VARIANTS = 8  # most variants kept per URL
_REMEMBERED = 4096  # invalidated URLs remembered (older ones: every store begun before is refused)
_VALIDATORS = (b"if-none-match", b"if-modified-since")
_LONGEST = 10**9  # seconds: a longer max-age is no different
_DROPS_KEPT = 1000  # entries of <ns>:cache:dropped kept (about), and read at once


@dataclass(slots=True)
class Ticket:
    """One request as the cache sees it, from ``begin`` to ``store``."""

    method: str
    key: Key
    headers: Headers
    epoch: int  # invalidations counted when the request began
    usable: bool  # False: a repeated header; neither looked up nor stored
    hosts: tuple[bytes, ...] = ()  # every Host given, when repeated


@dataclass(slots=True, eq=False)  # compared by identity
class _Entry:
    pairs: Pairs  # the answer's headers, without content-length (the server adds it) or age
    not_modified: Pairs  # the headers of a 304 standing for it, age not
    body: bytes
    vary: tuple[tuple[bytes, bytes | None], ...]  # the request headers it varies on, their values
    etags: tuple[str, ...]  # its ETag, if it has one
    last_modified: float | None  # its Last-Modified, epoch seconds
    stored: float  # monotonic clock
    expires: float
    size: int


@dataclass(slots=True)
class Hit:
    """What a cached answer sends: status, headers, body."""

    status: int
    pairs: Pairs
    body: bytes


class ResponseCache:
    """Answers stored by URL and variant, bounded by bytes; see the module docstring."""

    def __init__(self, max_bytes: int, max_age: float, max_entry: int) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_entry = max_entry
        self.size = 0
        self._entries: OrderedDict[Key, list[_Entry]] = OrderedDict()
        self._epoch = 0  # invalidations so far
        self._dropped: OrderedDict[Key, int] = OrderedDict()  # URL → epoch of its last invalidation
        self._forgotten = 0  # the newest epoch no longer in _dropped
        self.dropped: list[Key] = []  # URLs dropped here, for the other replicas to drop too

    def __len__(self) -> int:
        return sum(len(variants) for variants in self._entries.values())

    def begin(self, method: str, path: bytes, query: bytes, raw: Pairs) -> Ticket:
        """The request as the cache sees it: method, raw path and query, header pairs (names
        lower-case)."""
        headers = dict(raw)
        key = (headers.get(b"host", b""), path, query)
        if len(headers) == len(raw):
            return Ticket(method, key, headers, self._epoch, True)
        hosts = tuple(value for name, value in raw if name == b"host")
        return Ticket(method, key, headers, self._epoch, False, hosts)

    def lookup(self, ticket: Ticket) -> Hit | None:
        """The stored answer to this request, if there is a fresh one it may have."""
        variants = self._entries.get(ticket.key)
        if variants is None or not ticket.usable or ticket.method not in _LOOKUP:
            return None
        headers = ticket.headers
        if b"range" in headers or b"authorization" in headers or _no_cache(headers):
            return None
        for entry in reversed(variants):  # the newest first
            if not entry.vary or all(headers.get(name) == value for name, value in entry.vary):
                break
        else:
            return None
        now = time.monotonic()
        if entry.expires <= now:
            self._remove(ticket.key, entry)
            return None
        self._entries.move_to_end(ticket.key)
        age = (b"age", b"%d" % (now - entry.stored))
        if _not_modified(headers, entry):
            return Hit(304, [*entry.not_modified, age], b"")
        return Hit(200, [*entry.pairs, age], entry.body)  # to HEAD the server sends no body

    def store(self, ticket: Ticket, status: int, pairs: Pairs, body: bytes) -> bool:
        """Keep this answer if it may be stored (see the module docstring); True if kept.
        An answer to an unsafe method drops what is stored for its URL instead."""
        if ticket.method == "GET" and not any(name == b"cache-control" for name, _ in pairs):
            return False  # the usual answer, said nothing about caching: not kept
        if ticket.method != "GET":
            if ticket.method not in _SAFE:
                _, path, query = ticket.key
                for host in ticket.hosts or (ticket.key[0],):
                    self.invalidate((host, path, query))
            return False
        headers = ticket.headers
        if status != 200 or not ticket.usable or b"range" in headers:
            return False
        if b"authorization" in headers or b"no-store" in headers.get(b"cache-control", b"").lower():
            return False
        if self._invalidated_since(ticket.key, ticket.epoch):
            return False  # the URL changed while this answer was on its way
        found = _storable(pairs)
        if found is None:
            return False
        lifetime, vary_names = found
        size = len(body) + sum(len(n) + len(v) for n, v in pairs) + _OVERHEAD
        if size > self.max_entry or size > self.max_bytes:
            return False
        now = time.monotonic()
        entry = _Entry(
            pairs=pairs,
            not_modified=[p for p in pairs if p[0] in _NOT_MODIFIED_FIELDS],
            body=body,
            vary=tuple((name, headers.get(name)) for name in vary_names),
            etags=tuple(v.decode("latin-1") for n, v in pairs if n == b"etag")[:1],
            last_modified=_last_modified(pairs),
            stored=now,
            expires=now + min(lifetime, self.max_age),
            size=size,
        )
        variants = self._entries.pop(ticket.key, [])  # put back last: the most recently used
        kept = [v for v in variants if v.vary != entry.vary][-(_VARIANTS - 1) :]
        self.size += size - sum(v.size for v in variants if v not in kept)
        self._entries[ticket.key] = [*kept, entry]
        while self.size > self.max_bytes:
            oldest_key, oldest = next(iter(self._entries.items()))
            self._remove(oldest_key, oldest[0])
        return True

    def invalidate(self, key: Key, *, shared: bool = True) -> None:
        """Drop every variant stored for ``key``; refuse answers to requests begun before.
        ``shared``: also list it in ``dropped`` for the other replicas (False: it came from one)."""
        if shared and len(self.dropped) < _REMEMBERED:
            self.dropped.append(key)
        self._epoch += 1
        self._dropped.pop(key, None)
        self._dropped[key] = self._epoch
        if len(self._dropped) > _REMEMBERED:
            _, self._forgotten = self._dropped.popitem(last=False)
        for entry in self._entries.pop(key, []):
            self.size -= entry.size

    def _invalidated_since(self, key: Key, epoch: int) -> bool:
        if epoch == self._epoch:
            return False
        at = self._dropped.get(key)
        return (at if at is not None else self._forgotten) > epoch

    def _remove(self, key: Key, entry: _Entry) -> None:
        variants = self._entries.get(key)
        if variants is None or entry not in variants:
            return
        variants.remove(entry)
        self.size -= entry.size
        if not variants:
            del self._entries[key]


def _directives(value: bytes) -> dict[bytes, bytes]:
    """Cache-Control directives, names lower-case: {b"max-age": b"60", b"public": b""}."""
    found: dict[bytes, bytes] = {}
    for part in value.lower().split(b","):
        name, _, argument = part.strip().partition(b"=")
        if name:
            found[name] = argument.strip().strip(b'"')
    return found


def _no_cache(headers: Headers) -> bool:
    """The request asks for an answer from the handler (RFC 9111 §5.2.1, §5.4)."""
    control = headers.get(b"cache-control")
    if control is not None:
        asked = _directives(control)
        if b"no-cache" in asked or b"no-store" in asked or asked.get(b"max-age") == b"0":
            return True
    return b"no-cache" in headers.get(b"pragma", b"").lower()


def _storable(pairs: Pairs) -> tuple[float, tuple[bytes, ...]] | None:
    """(freshness lifetime, the request headers the answer varies on), or None: not storable."""
    control = b""
    vary: list[bytes] = []
    for name, value in pairs:
        if name == b"set-cookie":
            return None
        if name == b"cache-control":
            control += b"," + value
        elif name == b"vary":
            vary += [v.strip().lower() for v in value.split(b",") if v.strip()]
    directives = _directives(control)
    if b"*" in vary or any(word in directives for word in _NOT_STORED):
        return None
    if b"public" not in directives and b"s-maxage" not in directives:
        return None
    raw = directives.get(b"s-maxage") or directives.get(b"max-age")
    if not raw or not raw.isdigit():
        return None
    lifetime = int(raw) if len(raw) <= 9 else _LONGEST
    return (float(lifetime), tuple(dict.fromkeys(vary))) if lifetime > 0 else None


def _last_modified(pairs: Pairs) -> float | None:
    for name, value in pairs:
        if name == b"last-modified":
            return parse_http_date(value.decode("latin-1"))
    return None


def _not_modified(headers: Headers, entry: _Entry) -> bool:
    """hfiler's validator rules (``mpush.http.files.not_modified``) against the stored answer."""
    asked = {
        name.decode(): headers[name].decode("latin-1") for name in _VALIDATORS if name in headers
    }
    return bool(asked) and not_modified(asked, entry.etags, entry.last_modified)


class SharedDrops:
    """The URLs gateways drop from their response caches, shared through a stream: what one drops
    (a POST, PUT, PATCH or DELETE it answered), the others drop at their next ``swap`` (hgateway
    swaps every half second)."""

    def __init__(self, stream: str, instance: str) -> None:
        self.stream = stream
        self.instance = instance
        self.last: str | None = None  # the newest entry read

    async def start(self, redis: AnyRedis) -> None:
        """Read from the newest entry on: call before the gateway answers its first request."""
        newest = await redis.xrevrange(self.stream, count=1)
        self.last = reply_text(newest[0][0]) if newest else "0-0"

    async def swap(self, redis: AnyRedis, cache: ResponseCache) -> None:
        """Add the URLs ``cache`` dropped to the stream; drop those the others added since."""
        if self.last is None:
            await self.start(redis)
        outgoing, cache.dropped = cache.dropped, []
        try:
            if outgoing:
                async with redis.pipeline(transaction=False) as pipe:
                    for host, path, query in outgoing:
                        entry: Any = {"h": host, "p": path, "q": query, "by": self.instance}
                        pipe.xadd(self.stream, entry, maxlen=_DROPS_KEPT, approximate=True)
                    await pipe.execute()
        except Exception:
            cache.dropped[:0] = outgoing  # told next time
            raise
        found: Any = await redis.xread({self.stream: self.last or "0-0"}, count=_DROPS_KEPT)
        for _, entries in found.items() if isinstance(found, dict) else found or []:  # RESP3, 2
            for entry_id, raw in entries:
                self.last = reply_text(entry_id)
                fields = {reply_text(k): _bytes(v) for k, v in raw.items()}
                if fields.get("by") != self.instance.encode():
                    key = (fields.get("h", b""), fields.get("p", b""), fields.get("q", b""))
                    cache.invalidate(key, shared=False)


def _bytes(raw: object) -> bytes:
    return raw if isinstance(raw, bytes) else str(raw).encode("latin-1")
