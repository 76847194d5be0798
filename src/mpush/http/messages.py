"""The HTTP message contract (SPEC §4): request and response documents as JSON, version 1.

A request message, built by hgateway and pushed to the request queue::

    {"v": 1, "id": "7-42", "method": "GET", "url": "/hello/ann?x=1", "path": "/hello/ann",
     "query": "x=1", "headers": {"host": "localhost:8080", "accept": "*/*"},
     "body": "", "ts": 1767225600.125, "deadline": 1767225610.125, "reply": "hgateway:res:7"}

- ``headers``: lower-case names; repeated headers are joined with ", " (cookies with "; ").
- ``body``: text when the bytes are UTF-8, else base64 with ``"base64": true``.
- ``ts`` and ``deadline``: absolute times, Unix epoch seconds (floats). A handler may skip work
  whose deadline has passed: nobody waits for its answer any more.
- ``reply``: the list the response goes to, owned by the gateway instance holding the connection:
  a key name of 1…256 printable ASCII characters, no spaces. Handlers answer through
  ``Writes.reply`` (``mpush.runtime.batches``), which pushes only to a reply list — an absent key
  or a list with an expiry — and renews its expiry in the same step: a message naming any other
  key gets no answer, and the key is left as it was.
- hrouter adds ``"route": NAME`` and ``"params": {...}`` (the regex's named groups).

A response message, pushed by a handler to ``reply`` (or to the shared response list, for mdispatch
to route by id)::

    {"v": 1, "id": "7-42", "status": 200, "headers": {"content-type": "text/plain"}, "body": "hi"}

Only ``id`` and ``status`` are required; ``headers`` values are strings or lists of strings (for
repeated headers such as set-cookie); ``body`` follows the request's text/base64 rule. Anything else
is a ``MessageError`` naming the field.

This module is the only code that encodes or decodes these messages. Besides ``Request`` and
``Response`` (whole messages) it has the partial reads and writes the hot paths need:
``encode_request`` (hgateway), ``RequestHead.read`` and ``with_route`` (hrouter: what routing
needs, without the body), ``ReplyAddress.read`` and ``response_id`` (mdispatch), and
``answer_address`` (where a broken request can still be answered).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mpush.epoch import is_epoch

__all__ = [
    "VERSION",
    "MessageError",
    "ReplyAddress",
    "Request",
    "RequestHead",
    "Response",
    "answer_address",
    "compact_json",
    "decode_body",
    "encode_body",
    "encode_request",
    "error_response",
    "guess_id",
    "response_id",
    "with_route",
]

VERSION = 1
compact_json = orjson.dumps  # compact JSON as UTF-8 bytes, several times faster than json
_ID_PATTERN = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # no CTL in a field value but HTAB
_REPLY_KEY = re.compile(r"[!-~]{1,256}")  # printable ASCII, no space


class MessageError(ValueError):
    """A message that does not follow the contract; the text names the field."""


def encode_body(body: bytes, doc: dict[str, Any]) -> None:
    """Put ``body`` into ``doc``: as text when it is UTF-8, else base64 with ``base64: true``."""
    if not body:
        return
    try:
        doc["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        doc["body"] = base64.b64encode(body).decode("ascii")
        doc["base64"] = True


def decode_body(doc: Mapping[str, Any]) -> bytes:
    """The body bytes of a decoded message document."""
    body = doc.get("body", "")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise MessageError("body: must be a string")
    if doc.get("base64"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise MessageError("body: not valid base64") from None
    return body.encode("utf-8")


def _load(raw: bytes | str) -> dict[str, Any]:
    """The message's JSON object, of this version; MessageError else."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # invalid UTF-8 and lone surrogates included
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MessageError("not a JSON object")
    version = doc.get("v", VERSION)
    if version != VERSION:
        raise MessageError(f"v: unsupported version {version!r} (this is version {VERSION})")
    return doc


class _Contract:
    """Whatever a document that is not a message makes the reading raise, as a MessageError (a
    plain context manager: a generator-based one costs a microsecond a message)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or isinstance(exc, MessageError):
            return
        if isinstance(exc, (TypeError, ValueError, KeyError, AttributeError)):
            raise MessageError(f"not a {self.what} message: {type(exc).__name__}: {exc}") from None


_AS_REQUEST = _Contract("request")
_AS_RESPONSE = _Contract("response")


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise MessageError(f"{name}: required, a non-empty string")
    return value


def _reply(doc: Mapping[str, Any]) -> str:
    value = _text(doc, "reply")
    if not _REPLY_KEY.fullmatch(value):
        raise MessageError("reply: a key name of 1…256 printable ASCII characters, no spaces")
    return value


def _number(doc: Mapping[str, Any], name: str, default: float | None = None) -> float:
    value = doc.get(name)
    if value is None and default is not None:
        return default
    if not is_epoch(value):
        raise MessageError(f"{name}: required, a number of epoch seconds")
    return float(value)


def _headers(doc: Mapping[str, Any], *, lists: bool) -> dict[str, Any]:
    headers = doc.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise MessageError("headers: must be an object of name: value")
    for name, value in headers.items():
        if isinstance(value, str):
            continue
        if lists and isinstance(value, list) and all(isinstance(v, str) for v in value):
            continue
        raise MessageError(f"headers.{name}: must be a string" + (" or strings" if lists else ""))
    return headers


@dataclass
class Request:
    """One HTTP request as a message. ``doc`` keeps any extra fields a producer added."""

    id: str
    method: str
    url: str
    reply: str
    deadline: float
    ts: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    route: str | None = None
    params: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.url.partition("?")[0]

    @property
    def query(self) -> str:
        return self.url.partition("?")[2]

    @property
    def timeout(self) -> float:
        """The time the gateway gave this request, seconds (deadline − ts)."""
        return max(self.deadline - self.ts, 0.0)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": VERSION,
            "id": self.id,
            "method": self.method,
            "url": self.url,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "ts": self.ts,
            "deadline": self.deadline,
            "reply": self.reply,
        }
        encode_body(self.body, doc)
        if self.route is not None:
            doc["route"] = self.route
            doc["params"] = self.params
        return doc

    def to_json(self) -> bytes:
        return compact_json(self.to_doc())

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Request:
        params = doc.get("params") or {}
        if not isinstance(params, dict):
            raise MessageError("params: must be an object")
        route = doc.get("route")
        return cls(
            id=_text(doc, "id"),
            method=_text(doc, "method"),
            url=_text(doc, "url"),
            reply=_reply(doc),
            deadline=_number(doc, "deadline"),
            ts=_number(doc, "ts", default=0.0),
            headers=_headers(doc, lists=False),
            body=decode_body(doc),
            route=route if isinstance(route, str) else None,
            params={str(k): str(v) for k, v in params.items()},
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Request:
        """The request message ``raw``: any bytes give a Request or a MessageError."""
        with _AS_REQUEST:
            return cls.from_doc(_load(raw))


@dataclass
class Response:
    """One HTTP response as a message."""

    id: str
    status: int = 200
    headers: dict[str, str | list[str]] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def text(cls, request_id: str, text: str, status: int = 200) -> Response:
        return cls(request_id, status, {"content-type": "text/plain; charset=utf-8"}, text.encode())

    @classmethod
    def json(cls, request_id: str, data: Any, status: int = 200) -> Response:
        body = compact_json(data)
        return cls(request_id, status, {"content-type": "application/json"}, body)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": VERSION,
            "id": self.id,
            "status": self.status,
            "headers": self.headers,
        }
        encode_body(self.body, doc)
        return doc

    def to_json(self) -> bytes:
        return compact_json(self.to_doc())

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Response:
        status = doc.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise MessageError("status: required, an integer HTTP status 100…599")
        return cls(
            id=_text(doc, "id"),
            status=status,
            headers=_headers(doc, lists=True),
            body=decode_body(doc),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Response:
        """The response message ``raw``: any bytes give a Response or a MessageError."""
        with _AS_RESPONSE:
            return cls.from_doc(_load(raw))

    def wire_headers(self, skip: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
        """What a client may be sent of this answer: its headers as pairs but those named in
        ``skip``, names lower-cased (a list repeats the header); MessageError naming the problem
        when the status is not a final one (200…599) or a header is not one HTTP allows (a name
        that is not a token, a value with CR, LF, NUL or another control character, text beyond
        Latin-1)."""
        if not 200 <= self.status <= 599:
            raise MessageError(f"status: {self.status} is not a final status (200…599)")
        pairs: list[tuple[bytes, bytes]] = []
        for name, value in self.headers.items():
            key = _wire_name(name)
            if key in skip:
                continue
            for one in (value,) if isinstance(value, str) else value:
                # isprintable: no control character at all (the usual); else look closer
                if not one.isprintable() and _CONTROL.search(one):
                    raise MessageError(f"headers.{name}: a control character in the value")
                try:
                    pairs.append((key, one.encode("latin-1")))
                except UnicodeEncodeError:
                    raise MessageError(f"headers.{name}: not Latin-1 text") from None
        return pairs

    def header_pairs(self, skip: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
        """Headers as ASGI pairs but those named in ``skip``; names lower-cased, values as given
        (a list repeats the header)."""
        pairs: list[tuple[bytes, bytes]] = []
        for name, value in self.headers.items():
            key = name.lower().encode("latin-1")
            if key in skip:
                continue
            if isinstance(value, str):
                pairs.append((key, value.encode("latin-1")))
            else:
                pairs.extend((key, one.encode("latin-1")) for one in value)
        return pairs


_wire_names: dict[str, bytes] = {}  # header names found to be tokens → lower-case bytes
_WIRE_NAMES_KEPT = 1024


def _wire_name(name: str) -> bytes:
    """A header name as sent (lower-case bytes); MessageError when it is not a token."""
    key = _wire_names.get(name)
    if key is None:
        if not _TOKEN.fullmatch(name):
            raise MessageError(f"headers: {name!r} is not a header name")
        key = name.lower().encode("ascii")
        if len(_wire_names) < _WIRE_NAMES_KEPT:
            _wire_names[name] = key
    return key


def encode_request(
    request_id: str,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    *,
    ts: float,
    deadline: float,
    reply: str,
    route: str | None = None,
    params: dict[str, str] | None = None,
) -> bytes:
    """A request message from its parts (what hgateway sends): ``Request.to_json`` without the
    object in between; with ``route`` (and its ``params``) when the gateway routed it."""
    doc: dict[str, Any] = {
        "v": VERSION,
        "id": request_id,
        "method": method,
        "url": f"{path}?{query}" if query else path,
        "path": path,
        "query": query,
        "headers": headers,
        "ts": ts,
        "deadline": deadline,
        "reply": reply,
    }
    encode_body(body, doc)
    if route is not None:
        doc["route"] = route
        doc["params"] = params or {}
    return compact_json(doc)


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """What any request message carries to be answered: its id, the reply list, the deadline and
    the time it was sent. mdispatch reads no more of the requests it registers."""

    id: str
    reply: str
    deadline: float
    ts: float | None

    @classmethod
    def read(cls, raw: bytes | str) -> ReplyAddress:
        """The reply address of a request message; MessageError naming the field it lacks."""
        with _AS_REQUEST:
            return cls._of(_load(raw))

    @classmethod
    def _of(cls, doc: Mapping[str, Any]) -> ReplyAddress:
        ts = doc.get("ts")
        return cls(
            id=_text(doc, "id"),
            reply=_reply(doc),
            deadline=_number(doc, "deadline"),
            ts=float(ts) if is_epoch(ts) else None,
        )


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What hrouter reads of a request message: its reply address, method and path; no headers,
    no body decoded."""

    address: ReplyAddress
    method: str
    path: str

    @classmethod
    def read(cls, raw: bytes | str) -> RequestHead:
        """The head of a request message; MessageError naming the field it lacks."""
        with _AS_REQUEST:
            doc = _load(raw)
            url = _text(doc, "url")
            path = doc.get("path")
            if path is not None and not isinstance(path, str):
                raise MessageError("path: must be a string")
            return cls(
                address=ReplyAddress._of(doc),
                method=_text(doc, "method"),
                path=path or url.partition("?")[0],
            )


def with_route(raw: bytes, name: str, params: dict[str, str]) -> bytes:
    """The request message ``raw`` with ``route`` and ``params`` added (spliced in: the rest is
    not re-encoded). ``raw`` must be a JSON object (``RequestHead.read`` accepted it)."""
    end = raw.rstrip().rfind(b"}")
    extra = compact_json({"route": name, "params": params})
    return raw[:end] + b"," + extra[1:]


def response_id(raw: bytes) -> str | None:
    """The request id a response message answers: from its JSON, or read from a broken one."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return guess_id(raw)
    request_id = doc.get("id") if isinstance(doc, dict) else None
    return request_id if isinstance(request_id, str) and request_id else None


def answer_address(raw: bytes) -> tuple[str, str] | None:
    """(id, reply) of a request message too broken to handle, when both can still be read."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    request_id, reply = doc.get("id") or guess_id(raw), doc.get("reply")
    if not isinstance(request_id, str) or not request_id or not isinstance(reply, str):
        return None
    return (request_id, reply) if _REPLY_KEY.fullmatch(reply) else None


def error_response(request_id: str, status: int, reason: str) -> Response:
    """A short plain-text error response (never a stack trace)."""
    return Response.text(request_id, f"{status} {reason}\n", status)


def guess_id(raw: bytes | str) -> str | None:
    """The ``id`` of a message too broken to decode, when it can still be read, else None."""
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    match = _ID_PATTERN.search(data)
    if match is None:
        return None
    try:  # orjson, unlike json, refuses lone surrogates: an id must be valid UTF-8
        value = orjson.loads(b'"' + match.group(1) + b'"')
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None
