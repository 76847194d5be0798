"""Pieces of a static file server: safe path mapping, byte ranges, conditional requests.

``resolve`` maps a URL path to a regular file under a root, or None: anything that could escape the
root — ``..`` segments, percent-encoded slashes or backslashes, NUL bytes, symlinks pointing out —
maps to None (a 404), never to a file outside it. Real paths are compared after resolving, as
Starlette's StaticFiles does.
"""

from __future__ import annotations

import email.utils
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

__all__ = [
    "ByteRange",
    "compressible",
    "content_type",
    "http_date",
    "not_modified",
    "parse_range",
    "resolve",
]

_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


def resolve(
    root: Path, url_path: str, *, prefix: str = "/", index: tuple[str, ...] = ()
) -> tuple[Path, str] | None:
    """(file, path relative to root) for ``url_path`` (as sent, percent-encoded), or None."""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    if url_path + "/" == prefix:
        url_path = prefix
    if not url_path.startswith(prefix):
        return None
    rest = url_path[len(prefix) :]
    lowered = rest.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "\\" in rest:
        return None
    try:
        decoded = unquote(rest, errors="strict")
    except UnicodeDecodeError:
        return None
    parts = [part for part in decoded.split("/") if part]
    if any(part in (".", "..") or "\x00" in part for part in parts):
        return None
    real_root = root.resolve()
    candidate = real_root.joinpath(*parts)
    try:
        target = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(real_root):
        return None  # a symlink pointing out of the root
    if target.is_dir():
        for name in index:
            found = resolve(root, url_path.rstrip("/") + "/" + name, prefix=prefix)
            if found is not None:
                return found
        return None
    if not target.is_file():
        return None
    return target, target.relative_to(real_root).as_posix()


def content_type(path: str) -> str:
    kind, _ = mimetypes.guess_type(path)
    if kind is None:
        return "application/octet-stream"
    if kind.startswith(_TEXT_TYPES):
        return f"{kind}; charset=utf-8"
    return kind


def compressible(kind: str) -> bool:
    return kind.startswith(_TEXT_TYPES) or kind.startswith("application/xml")


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def parse_http_date(text: str) -> float | None:
    """An HTTP date as epoch seconds; None when it is not one."""
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def not_modified(headers: Mapping[str, str], etags: tuple[str, ...], mtime: float | None) -> bool:
    """True when the request's validators (RFC 9110 §13.1: If-None-Match, weak comparison, wins
    over If-Modified-Since) say the client's copy of the answer with ``etags`` and last
    modification time ``mtime`` is current."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        offered = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in offered or any(tag.removeprefix("W/") in offered for tag in etags)
    since = headers.get("if-modified-since")
    if since is None or mtime is None:
        return False
    parsed = parse_http_date(since)
    return parsed is not None and int(mtime) <= int(parsed)


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str, size: int) -> ByteRange | bool | None:
    """The single range asked for; None when the header is not one we serve (send it all);
    False when it cannot be satisfied (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multiple ranges: the whole file is a valid answer
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return False
            return ByteRange(max(size - length, 0), size - 1) if size else False
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0:
        return None
    if start >= size:
        return False
    if end < start:
        return None
    return ByteRange(start, min(end, size - 1))
