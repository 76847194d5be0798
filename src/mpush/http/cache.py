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
matches. A request saying ``Cache-Control: no-cache`` or ``Pragma: no-cache`` goes through to
the handler (and its answer refreshes the entry). An unsafe method (POST, PUT, PATCH, DELETE)
on a URL drops what is stored for it.

The cache is bounded by ``cache_bytes`` (bodies and headers), least recently used first out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["Hit", "ResponseCache", "cache_key"]

Headers = dict[bytes, bytes]  # one request's headers, names lower-case (as ASGI servers give them)
Pairs = list[tuple[bytes, bytes]]  # ASGI header pairs

_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_NOT_STORED = (b"no-store", b"no-cache", b"private")
_OVERHEAD = 200  # bytes an entry costs beyond its body and headers, roughly
_VARIANTS = 8  # most variants kept per URL


def cache_key(scope: dict[str, object], headers: Headers) -> tuple[bytes, bytes, bytes]:
    """What a request is cached under: host, path, query."""
    path = scope.get("raw_path") or str(scope["path"]).encode("latin-1")
    return headers.get(b"host", b""), path, scope["query_string"]  # type: ignore[return-value]


@dataclass(slots=True, eq=False)  # compared by identity
class _Entry:
    pairs: Pairs  # the answer's headers, content-length included, age not
    body: bytes
    vary: tuple[tuple[bytes, bytes | None], ...]  # the request headers it varies on, their values
    etag: bytes | None
    last_modified: float | None
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
        self._entries: OrderedDict[tuple[bytes, bytes, bytes], list[_Entry]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(variants) for variants in self._entries.values())

    def lookup(self, method: str, key: tuple[bytes, bytes, bytes], headers: Headers) -> Hit | None:
        """The stored answer to this request, if there is a fresh one it may have."""
        variants = self._entries.get(key)
        if variants is None or b"range" in headers or b"authorization" in headers:
            return None
        if _no_cache(headers):
            return None
        now = time.monotonic()
        for entry in variants:
            if not entry.vary or all(headers.get(name) == value for name, value in entry.vary):
                break
        else:
            return None
        if entry.expires <= now:
            self._remove(key, entry)
            return None
        self._entries.move_to_end(key)
        age = (b"age", b"%d" % (now - entry.stored))
        if _not_modified(headers, entry):
            return Hit(304, [p for p in entry.pairs if p[0] != b"content-length"] + [age], b"")
        return Hit(200, [*entry.pairs, age], b"" if method == "HEAD" else entry.body)

    def store(
        self,
        method: str,
        key: tuple[bytes, bytes, bytes],
        headers: Headers,
        status: int,
        pairs: Pairs,
        body: bytes,
    ) -> bool:
        """Keep this answer if it may be stored (see the module docstring); True if kept."""
        if method != "GET":
            if method not in _SAFE:
                self.invalidate(key)
            return False
        if status != 200 or b"range" in headers or b"authorization" in headers:
            return False
        if b"no-store" in headers.get(b"cache-control", b""):
            return False
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
            body=body,
            vary=tuple((name, headers.get(name)) for name in vary_names),
            etag=_header(pairs, b"etag"),
            last_modified=_http_date(_header(pairs, b"last-modified")),
            stored=now,
            expires=now + min(lifetime, self.max_age),
            size=size,
        )
        variants = self._entries.pop(key, [])  # put back last: the most recently used
        kept = [v for v in variants if v.vary != entry.vary][-(_VARIANTS - 1) :]
        self.size += size - sum(v.size for v in variants if v not in kept)
        self._entries[key] = [*kept, entry]
        while self.size > self.max_bytes:
            oldest_key, oldest = next(iter(self._entries.items()))
            self._remove(oldest_key, oldest[0])
        return True

    def invalidate(self, key: tuple[bytes, bytes, bytes]) -> None:
        """Drop every variant stored for ``key``."""
        for entry in self._entries.pop(key, []):
            self.size -= entry.size

    def _remove(self, key: tuple[bytes, bytes, bytes], entry: _Entry) -> None:
        variants = self._entries.get(key)
        if variants is None or entry not in variants:
            return
        variants.remove(entry)
        self.size -= entry.size
        if not variants:
            del self._entries[key]


def _no_cache(headers: Headers) -> bool:
    control = headers.get(b"cache-control")
    if control is not None and (b"no-cache" in control or b"max-age=0" in control):
        return True
    return b"no-cache" in headers.get(b"pragma", b"")


def _storable(pairs: Pairs) -> tuple[float, tuple[bytes, ...]] | None:
    """(freshness lifetime, the request headers the answer varies on), or None: not storable."""
    control = b""
    vary: list[bytes] = []
    for name, value in pairs:
        if name == b"set-cookie":
            return None
        if name == b"cache-control":
            control += b"," + value.lower()
        elif name == b"vary":
            vary += [v.strip().lower() for v in value.split(b",") if v.strip()]
    if b"*" in vary or any(word in control for word in _NOT_STORED):
        return None
    directives = {}
    for part in control.split(b","):
        name, _, value = part.strip().partition(b"=")
        directives[name] = value.strip(b'"')
    if b"public" not in directives and b"s-maxage" not in directives:
        return None
    raw = directives.get(b"s-maxage") or directives.get(b"max-age")
    if not raw or not raw.isdigit() or int(raw) <= 0:
        return None
    return float(int(raw)), tuple(dict.fromkeys(vary))


def _header(pairs: Pairs, name: bytes) -> bytes | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def _http_date(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        return parsedate_to_datetime(raw.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _not_modified(headers: Headers, entry: _Entry) -> bool:
    """RFC 9110 §13.1: If-None-Match (weak comparison) wins over If-Modified-Since."""
    wanted = headers.get(b"if-none-match")
    if wanted is not None:
        if entry.etag is None:
            return False
        if wanted.strip() == b"*":
            return True
        mine = entry.etag.removeprefix(b"W/")
        return any(tag.strip().removeprefix(b"W/") == mine for tag in wanted.split(b","))
    since = _http_date(headers.get(b"if-modified-since"))
    return since is not None and entry.last_modified is not None and entry.last_modified <= since
