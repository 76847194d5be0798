"""hrender: HTML pages rendered with Jinja2 from the request and from Redis.

Each page is ``ROUTE TEMPLATE [NAME=KEY ...]``: requests that hrouter routed as ROUTE are rendered
with TEMPLATE, given ``request`` (method, path, query, headers), ``params`` (the route's named
groups), ``body`` (the JSON body parsed, else its text) and, for each NAME=KEY, the Redis value of
KEY (``$param`` in a key is replaced by that route param): a string, a hash as a dict, a list, a
set or a sorted set as lists — read by type, capped at ``max_items``.

Templates come from ``--templates DIR`` (trusted files) or, as ``redis:NAME``, from the Redis hash
``--templates-key`` (default ``<ns>:templates``): those are rendered in Jinja2's sandbox, so a
template cannot reach Python internals. Autoescape is always on. A template error answers 500 and
the error goes to the log, never to the page.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jinja2
import orjson
from jinja2.sandbox import SandboxedEnvironment

from mpush.config import RenderSettings
from mpush.connection import reply_text
from mpush.errors import ConfigError
from mpush.http.messages import Request, Response, error_response
from mpush.http.serve import RequestService
from mpush.keys import HttpKeys

__all__ = ["Page", "Renderer", "create"]

log = logging.getLogger(__name__)

METRIC = "hrender"
REDIS_TEMPLATE = "redis:"
_PARAM = re.compile(r"\$(\w+)")
_COMPILED_KEEP = 100


@dataclass(frozen=True)
class Page:
    route: str
    template: str
    keys: tuple[tuple[str, str], ...]  # (name, key pattern)


def parse_page(spec: str) -> Page:
    route, template, *pairs = spec.split()
    keys = tuple((name, key) for name, _, key in (pair.partition("=") for pair in pairs))
    return Page(route, template, keys)


def create(settings: RenderSettings) -> Renderer:
    pages = [parse_page(spec) for spec in settings.page]
    for page in pages:
        if not page.template.startswith(REDIS_TEMPLATE) and settings.templates is None:
            raise ConfigError("templates", f"page {page.route!r} needs --templates DIR")
    return Renderer(settings, {page.route: page for page in pages})


class Renderer(RequestService):
    """The hrender service."""

    name = "hrender"
    settings: RenderSettings

    def __init__(self, settings: RenderSettings, pages: dict[str, Page]) -> None:
        self.settings = settings
        self.pages = pages
        self.files = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(settings.templates or ".")),
            autoescape=True,
            auto_reload=True,
        )
        self.sandbox = SandboxedEnvironment(autoescape=True)
        self._compiled: dict[str, jinja2.Template] = {}
        self.templates_key = (
            settings.templates_key or HttpKeys(settings.service_namespace).templates
        )

    def registry_info(self) -> Mapping[str, str]:
        return {"in": self.settings.input, "pages": ",".join(self.pages)}

    async def handle(self, request: Request) -> Response:
        page = self.pages.get(request.route or "")
        if page is None:
            return error_response(request.id, 404, "Not Found")
        try:
            template = await self._template(page.template)
            context = await self._context(page, request)
            html = template.render(context)
        except Exception as exc:  # template bugs, sandbox refusals: the log gets the details
            log.error("page %s (%s) failed: %s: %s", page.route, page.template,
                      type(exc).__name__, exc)  # fmt: skip
            self._metrics.incr(METRIC, "errors")
            return error_response(request.id, 500, "Internal Server Error")
        self._metrics.incr(METRIC, f"page:{page.route}")
        headers: dict[str, str | list[str]] = {"content-type": "text/html; charset=utf-8"}
        return Response(request.id, 200, headers, html.encode())

    async def _template(self, name: str) -> jinja2.Template:
        if not name.startswith(REDIS_TEMPLATE):
            return self.files.get_template(name)
        assert self._redis is not None
        source = await self._redis.hget(self.templates_key, name[len(REDIS_TEMPLATE) :])
        if source is None:
            raise jinja2.TemplateNotFound(f"{name} in {self.templates_key}")
        text = reply_text(source)
        digest = hashlib.sha256(text.encode()).hexdigest()
        compiled = self._compiled.get(digest)
        if compiled is None:
            if len(self._compiled) >= _COMPILED_KEEP:
                self._compiled.clear()
            compiled = self._compiled[digest] = self.sandbox.from_string(text)
        return compiled

    async def _context(self, page: Page, request: Request) -> dict[str, Any]:
        body: Any = request.body.decode("utf-8", "replace")
        if request.headers.get("content-type", "").startswith("application/json") and body:
            body = orjson.loads(request.body)
        context: dict[str, Any] = {
            "request": {
                "method": request.method,
                "path": request.path,
                "query": {k: v[0] for k, v in parse_qs(request.query).items()},
                "headers": request.headers,
            },
            "params": request.params,
            "body": body,
        }
        for name, pattern in page.keys:
            key = _PARAM.sub(lambda m: request.params.get(m.group(1), ""), pattern)
            context[name] = await self._read(key)
        return context

    async def _read(self, key: str) -> Any:
        assert self._redis is not None
        redis, cap = self._redis, self.settings.max_items
        kind = _text(await redis.type(key))
        if kind == "string":
            return _text(await redis.get(key))
        if kind == "hash":
            return {_text(k): _text(v) for k, v in (await redis.hgetall(key)).items()}
        if kind == "list":
            return [_text(v) for v in await redis.lrange(key, 0, cap - 1)]
        if kind == "set":
            return sorted(_text(v) for v in await redis.smembers(key))[:cap]
        if kind == "zset":
            found: Any = await redis.zrange(key, 0, cap - 1, withscores=True)
            return [[_text(m), s] for m, s in found]
        return None


def _text(raw: Any) -> Any:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
