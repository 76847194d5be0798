"""hfiler: static files over HTTP messages, loaded into Redis once and served from Redis.

Each file is one hash ``<cache_prefix>:<path>`` with its bytes, an optional gzip variant, a content
hash (the ETag, the same on every replica), its mtime and size, and an EXPIRE chosen per file: the
``--expiry`` callable's answer, else the first matching ``--ttl-pattern``, else ``--ttl``. Each
Redis read stats the file: a changed mtime or size reloads it, so edits show without a restart.
Requests of a batch asking for the same file share one read (stat and HGETALL); a URL path is
mapped to a file (realpath, containment) at most once a second.

Answers: 200 with Content-Type, Cache-Control, Last-Modified, ETag, Accept-Ranges (gzip when the
client accepts it, with ``Vary: Accept-Encoding``); 304 on If-None-Match / If-Modified-Since; 206
for a satisfiable single Range, 416 for an unsatisfiable one; 404 for anything not a regular file
under the root (``..``, encoded slashes, symlinks out); 405 for methods other than GET and HEAD.
A file over ``--max-size`` is refused (404) with a warning naming it and the limit.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import gzip
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpush.config import FilerSettings
from mpush.http.files import (
    compressible,
    content_type,
    http_date,
    not_modified,
    parse_range,
    resolve,
)
from mpush.http.messages import Request, Response, error_response
from mpush.http.serve import RequestService, load_callable
from mpush.keys import HttpKeys, keyed

__all__ = ["Filer", "create"]

log = logging.getLogger(__name__)

METRIC = "hfiler"
_PATH_FRESH = 1.0  # seconds a resolved URL path is trusted
_READS = ("GET", "HEAD")
_PATHS_KEPT = 4096  # resolved URL paths remembered


def create(settings: FilerSettings) -> Filer:
    expiry = load_callable(settings.expiry, "expiry") if settings.expiry else None
    return Filer(settings, expiry)


@dataclass(frozen=True)
class Asset:
    """A file as stored in Redis."""

    body: bytes
    gzipped: bytes | None
    etag: str  # quoted, the identity representation's
    mtime_ns: int
    size: int
    kind: str
    ttl: int

    @functools.cached_property
    def last_modified(self) -> str:
        """The HTTP date of mtime, formatted once per asset (the requests of a batch share it)."""
        return http_date(self.mtime_ns / 1e9)

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gz"'

    def to_hash(self) -> dict[str, bytes | str | int]:
        fields: dict[str, bytes | str | int] = {
            "body": self.body,
            "etag": self.etag,
            "mtime_ns": self.mtime_ns,
            "size": self.size,
            "type": self.kind,
            "ttl": self.ttl,
        }
        if self.gzipped is not None:
            fields["gzip"] = self.gzipped
        return fields

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Asset | None:
        try:
            return cls(
                body=raw[b"body"],
                gzipped=raw.get(b"gzip"),
                etag=raw[b"etag"].decode(),
                mtime_ns=int(raw[b"mtime_ns"]),
                size=int(raw[b"size"]),
                kind=raw[b"type"].decode(),
                ttl=int(raw[b"ttl"]),
            )
        except (KeyError, ValueError):
            return None


class Filer(RequestService):
    """The hfiler service."""

    name = "hfiler"
    settings: FilerSettings

    def __init__(
        self, settings: FilerSettings, expiry: Callable[[str, os.stat_result], Any] | None
    ) -> None:
        self.settings = settings
        self._expiry = expiry
        self._patterns = [
            (glob, int(seconds))
            for glob, _, seconds in (spec.rpartition("=") for spec in settings.ttl_pattern)
        ]
        self.cache_prefix = (
            settings.cache_prefix or HttpKeys(settings.service_namespace).files_prefix
        )
        self._too_large: set[str] = set()
        # URL path → (file, relative path) or None, and when that answer was found: a path is
        # resolved (realpath, containment, index files) at most once a second.
        self._paths: dict[str, tuple[tuple[Path, str] | None, float]] = {}
        # What prepare_batch read for the batch being handled: file → (asset, loaded) or the error
        self._ready: dict[str, tuple[Asset | None, bool] | Exception] = {}

    def registry_info(self) -> Mapping[str, str]:
        return {"in": self.settings.input, "root": str(self.settings.root)}

    async def prepare_batch(self, requests: list[Request]) -> None:
        """One read (and, when needed, load) per file the batch asks for, shared by its requests."""
        wanted: dict[str, Path] = {}
        for request in requests:
            if request.method in _READS:
                found = self._resolve(request.path)
                if found is not None:
                    wanted.setdefault(found[1], found[0])
        reads = [self._fetch(path, relative) for relative, path in wanted.items()]
        results = await asyncio.gather(*reads, return_exceptions=True)
        self._ready = {}
        for relative, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            if isinstance(result, Exception):
                log.warning("cannot read %s for %d requests: %r", relative, len(requests), result)
            self._ready[relative] = result

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        if request.method not in _READS:
            response = error_response(request.id, 405, "Method Not Allowed")
            response.headers["allow"] = "GET, HEAD"
            return response
        found = self._resolve(request.path)
        if found is None:
            self._metrics.incr(METRIC, "notfound")
            return error_response(request.id, 404, "Not Found")
        path, relative = found
        ready = self._ready.get(relative)
        if ready is None:  # not read for this batch (handled on its own): read it now
            return self._handle_alone(request, path, relative)
        if isinstance(ready, Exception):
            self._metrics.incr(METRIC, "errors")
            return error_response(request.id, 500, "Internal Server Error")
        asset, loaded = ready
        if loaded:  # this request pays for the load; the next ones of the batch are hits
            self._ready[relative] = (asset, False)
        elif asset is not None:
            self._metrics.incr(METRIC, "hit")
        return self._respond(request, asset)

    async def _handle_alone(self, request: Request, path: Path, relative: str) -> Response:
        asset, loaded = await self._fetch(path, relative)
        if asset is not None and not loaded:
            self._metrics.incr(METRIC, "hit")
        return self._respond(request, asset)

    def _respond(self, request: Request, asset: Asset | None) -> Response:
        if asset is None:
            self._metrics.incr(METRIC, "notfound")
            return error_response(request.id, 404, "Not Found")
        return self._answer(request, asset)

    def _resolve(self, url_path: str) -> tuple[Path, str] | None:
        now = time.monotonic()
        known = self._paths.get(url_path)
        if known is not None and now - known[1] < _PATH_FRESH:
            return known[0]
        found = resolve(
            self.settings.root,
            url_path,
            prefix=self.settings.prefix,
            index=tuple(self.settings.index),
        )
        if len(self._paths) >= _PATHS_KEPT:
            self._paths.clear()
        self._paths[url_path] = (found, now)
        return found

    async def _fetch(self, path: Path, relative: str) -> tuple[Asset | None, bool]:
        """(the file's asset, loaded): from Redis when current there, else loaded into Redis."""
        assert self._redis is not None
        try:
            stat = path.stat()  # noqa: ASYNC240 - a local stat takes microseconds
        except OSError:
            return None, False
        if stat.st_size > self.settings.max_size:
            if relative not in self._too_large:
                self._too_large.add(relative)
                log.warning(
                    "%s is %d bytes, over max_size %d: not served",
                    relative,
                    stat.st_size,
                    self.settings.max_size,
                )
            return None, False
        key = keyed(self.cache_prefix, relative)
        stored = Asset.from_hash(await self._redis.hgetall(key))
        current = (stat.st_mtime_ns, stat.st_size)
        if stored is not None and (stored.mtime_ns, stored.size) == current:
            return stored, False
        asset = await asyncio.to_thread(self._load, path, relative, stat)
        if asset is None:
            return None, False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=asset.to_hash())  # type: ignore[arg-type]
            pipe.expire(key, asset.ttl)
            await pipe.execute()
        self._metrics.incr(METRIC, "loaded")
        return asset, True

    def _load(self, path: Path, relative: str, stat: os.stat_result) -> Asset | None:
        try:
            body = path.read_bytes()
        except OSError as exc:
            log.warning("cannot read %s: %s", relative, exc.strerror)
            return None
        kind = content_type(relative)
        gzipped = None
        if self.settings.gzip and len(body) >= self.settings.gzip_min and compressible(kind):
            gzipped = gzip.compress(body, compresslevel=6, mtime=0)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return Asset(
            body, gzipped, etag, stat.st_mtime_ns, len(body), kind, self._ttl(relative, stat)
        )

    def _ttl(self, relative: str, stat: os.stat_result) -> int:
        if self._expiry is not None:
            try:
                chosen = self._expiry(relative, stat)
            except Exception:
                log.exception("the expiry function failed on %s: using the default", relative)
                chosen = None
            if chosen is not None:
                return max(1, int(chosen))
        for glob, seconds in self._patterns:
            if fnmatch.fnmatch(relative, glob):
                return seconds
        return self.settings.ttl

    def _answer(self, request: Request, asset: Asset) -> Response:
        headers: dict[str, str | list[str]] = {
            "content-type": asset.kind,
            "cache-control": f"public, max-age={self._max_age(asset)}",
            "last-modified": asset.last_modified,
            "accept-ranges": "bytes",
        }
        if asset.gzipped is not None:
            headers["vary"] = "Accept-Encoding"
        use_gzip = asset.gzipped is not None and _accepts_gzip(request.headers)
        etag = asset.gzip_etag if use_gzip else asset.etag
        headers["etag"] = etag
        tags = (asset.etag, asset.gzip_etag) if asset.gzipped is not None else (asset.etag,)
        if not_modified(request.headers, tags, asset.mtime_ns / 1e9):
            self._metrics.incr(METRIC, "not_modified")
            return Response(request.id, 304, headers)
        wanted = request.headers.get("range")
        if wanted is not None and _if_range_holds(request.headers, asset):
            chosen = parse_range(wanted, asset.size)
            if chosen is False:
                headers["content-range"] = f"bytes */{asset.size}"
                return Response(request.id, 416, headers)
            if chosen is not None and not isinstance(chosen, bool):
                headers["content-range"] = chosen.content_range(asset.size)
                headers["etag"] = asset.etag
                self._metrics.incr(METRIC, "partial")
                return Response(request.id, 206, headers, asset.body[chosen.start : chosen.end + 1])
        if use_gzip and asset.gzipped is not None:
            headers["content-encoding"] = "gzip"
            return Response(request.id, 200, headers, asset.gzipped)
        return Response(request.id, 200, headers, asset.body)

    def _max_age(self, asset: Asset) -> int:
        return self.settings.max_age if self.settings.max_age is not None else asset.ttl


def _accepts_gzip(headers: Mapping[str, str]) -> bool:
    for part in headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


def _if_range_holds(headers: Mapping[str, str], asset: Asset) -> bool:
    validator = headers.get("if-range")
    return validator is None or validator.strip() == asset.etag
