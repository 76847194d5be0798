"""rquery: read Redis data over HTTP messages, under allowed key prefixes only.

    GET /get/KEY            GET /hgetall/KEY        GET /lrange/KEY/START/STOP
    GET /smembers/KEY       GET /zrange/KEY/START/STOP[?withscores]
    GET /ttl/KEY            GET /type/KEY           GET /llen/KEY
    GET /scan/PREFIX        (keys starting with PREFIX)
    POST /set/KEY, POST /lpush/KEY (the body is the value): only under a --write prefix

Each path segment is percent-decoded on its own (a key holding ``/`` is written ``%2F``). A key, or
a scan prefix, must start with an ``--allow`` prefix, compared exactly after decoding: anything
else is 403, as is a segment that is ``.`` or ``..`` or holds a control character. Scan prefixes
are matched literally (glob characters escaped) and every key found is checked again. Answers are
JSON by default, ``?format=text`` for plain text, ``?format=html`` (or ``Accept: text/html``) for an
HTML table. Lists are capped at ``--max-items``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from mpush.config import QuerySettings
from mpush.http.messages import Request, Response, error_response
from mpush.http.serve import RequestService

__all__ = ["Query", "create"]

log = logging.getLogger(__name__)

METRIC = "rquery"
_ARITY = {
    "get": 1, "hgetall": 1, "smembers": 1, "ttl": 1, "type": 1, "llen": 1, "scan": 1,
    "lrange": 3, "zrange": 3, "set": 1, "lpush": 1,
}  # fmt: skip
_WRITES = {"set", "lpush"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GLOB = re.compile(r"([*?\[\]\\])")


def create(settings: QuerySettings) -> Query:
    return Query(settings)


class Refused(Exception):
    """An answer other than 200: status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Query(RequestService):
    """The rquery service."""

    name = "rquery"
    settings: QuerySettings

    def __init__(self, settings: QuerySettings) -> None:
        self.settings = settings

    def registry_info(self) -> Mapping[str, str]:
        return {"in": self.settings.input, "allow": ",".join(self.settings.allow)}

    async def handle(self, request: Request) -> Response:
        try:
            command, args = self._parse(request)
            data = await self._run(command, args, request)
        except Refused as refused:
            self._metrics.incr(METRIC, f"status:{refused.status}")
            return error_response(request.id, refused.status, refused.reason)
        self._metrics.incr(METRIC, command)
        return _render(request, command, args[0], data)

    def _parse(self, request: Request) -> tuple[str, list[str]]:
        prefix = self.settings.prefix.rstrip("/")
        path = request.path
        if not path.startswith(prefix + "/"):
            raise Refused(404, "Not Found")
        segments = []
        for raw in path[len(prefix) + 1 :].split("/"):
            try:
                segment = unquote(raw, errors="strict")
            except UnicodeDecodeError:
                raise Refused(403, "Forbidden") from None
            if segment in (".", "..") or _CONTROL.search(segment):
                raise Refused(403, "Forbidden")
            segments.append(segment)
        command, args = segments[0].lower(), segments[1:]
        if command not in _ARITY:
            raise Refused(404, "Not Found")
        if len(args) > _ARITY[command]:
            raise Refused(403, "Forbidden")  # only the documented shapes are served
        if len(args) < _ARITY[command]:
            raise Refused(400, "Bad Request")
        wanted_method = "POST" if command in _WRITES else "GET"
        if request.method != wanted_method and not (
            wanted_method == "GET" and request.method == "HEAD"
        ):
            raise Refused(405, "Method Not Allowed")
        key = args[0]
        if not self._allowed(key, self.settings.allow):
            raise Refused(403, "Forbidden")
        if command in _WRITES and not self._allowed(key, self.settings.write):
            raise Refused(403, "Forbidden")
        return command, args

    @staticmethod
    def _allowed(key: str, prefixes: list[str]) -> bool:
        return any(key.startswith(prefix) for prefix in prefixes)

    async def _run(self, command: str, args: list[str], request: Request) -> Any:
        assert self._redis is not None
        redis, key, cap = self._redis, args[0], self.settings.max_items
        if command == "get":
            return _text(await redis.get(key))
        if command == "hgetall":
            found = await redis.hgetall(key)
            return {_text(k): _text(v) for k, v in sorted(found.items())}
        if command == "smembers":
            return sorted(_text(m) for m in await redis.smembers(key))[:cap]
        if command == "ttl":
            return int(await redis.ttl(key))
        if command == "type":
            return _text(await redis.type(key))
        if command == "llen":
            return int(await redis.llen(key))
        if command in ("lrange", "zrange"):
            start, stop = _index(args[1]), _index(args[2])
            if command == "lrange":
                return [_text(v) for v in await redis.lrange(key, start, stop)][:cap]
            scores = "withscores" in parse_qs(request.query, keep_blank_values=True)
            ranked: Any = await redis.zrange(key, start, stop, withscores=scores)
            if scores:
                return [[_text(m), float(s)] for m, s in ranked][:cap]
            return [_text(m) for m in ranked][:cap]
        if command == "scan":
            return await self._scan(key)
        if command == "set":
            await redis.set(key, request.body)
            return "OK"
        return int(await redis.lpush(key, request.body))  # lpush

    async def _scan(self, prefix: str) -> list[str]:
        assert self._redis is not None
        pattern = _GLOB.sub(r"\\\1", prefix) + "*"
        keys: list[str] = []
        async for raw in self._redis.scan_iter(match=pattern, count=500):
            key = _text(raw)
            if key.startswith(prefix) and self._allowed(key, self.settings.allow):
                keys.append(key)
            if len(keys) >= self.settings.max_items:
                break
        return sorted(keys)


def _index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Refused(400, "Bad Request") from None


def _text(raw: Any) -> Any:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return raw


def _render(request: Request, command: str, key: str, data: Any) -> Response:
    wanted = parse_qs(request.query).get("format", [""])[0]
    if not wanted and "text/html" in request.headers.get("accept", ""):
        wanted = "html"
    if wanted == "text":
        return Response.text(request.id, _plain(data))
    if wanted == "html":
        body = _table(command, key, data).encode()
        return Response(request.id, 200, {"content-type": "text/html; charset=utf-8"}, body)
    return Response.json(request.id, data)


def _plain(data: Any) -> str:
    if isinstance(data, dict):
        return "".join(f"{k}\t{v}\n" for k, v in data.items())
    if isinstance(data, list):
        return "".join(
            "\t".join(str(x) for x in item) + "\n" if isinstance(item, list) else f"{item}\n"
            for item in data
        )
    return "" if data is None else f"{data}\n"


def _table(command: str, key: str, data: Any) -> str:
    rows: list[list[Any]]
    if isinstance(data, dict):
        rows = [[k, v] for k, v in data.items()]
    elif isinstance(data, list):
        rows = [item if isinstance(item, list) else [item] for item in data]
    else:
        rows = [[data]]
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    title = html.escape(f"{command} {key}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><table><caption>{title}</caption>{cells}</table></body></html>\n"
    )
