"""The HTTP message contract, routes and config overlay: plain functions, no processes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpush.config import GatewaySettings, load_settings, overlay
from mpush.errors import ConfigError
from mpush.http.messages import MessageError, Request, Response, guess_id
from mpush.http.routes import RouteError, RouteTable, parse_route


def request(**changes: object) -> Request:
    base = Request(
        id="7-1", method="GET", url="/a?b=1", reply="hgateway:res:7", deadline=20.0, ts=10.0
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@given(st.binary(max_size=300))
def test_any_body_survives_a_round_trip(body: bytes) -> None:
    assert Request.from_json(request(body=body).to_json()).body == body
    assert Response.from_json(Response("x", 200, {}, body).to_json()).body == body


def test_text_bodies_travel_as_text_binary_as_base64() -> None:
    assert json.loads(request(body=b"hi").to_json())["body"] == "hi"
    doc = json.loads(request(body=b"\xff\x00").to_json())
    assert doc["base64"] is True
    assert doc["body"] == "/wA="


def test_request_fields() -> None:
    parsed = Request.from_json(request(route="r", params={"who": "ann"}).to_json())
    assert (parsed.path, parsed.query, parsed.timeout) == ("/a", "b=1", 10.0)
    assert parsed.params == {"who": "ann"}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ("[1]", "not a JSON object"),
        ("{", "not JSON"),
        ('{"v": 2, "id": "x", "status": 200}', "v: unsupported version"),
        ('{"status": 200}', "id: required"),
        ('{"id": "x", "status": "200"}', "status: required"),
        ('{"id": "x", "status": 99}', "status: required"),
        ('{"id": "x", "status": 200, "headers": []}', "headers: must be"),
        ('{"id": "x", "status": 200, "headers": {"a": 1}}', "headers.a: must be"),
        ('{"id": "x", "status": 200, "body": 5}', "body: must be a string"),
        ('{"id": "x", "status": 200, "body": "!!", "base64": true}', "body: not valid base64"),
    ],
)
def test_malformed_responses_name_the_field(document: str, field: str) -> None:
    with pytest.raises(MessageError, match=field):
        Response.from_json(document)


def test_minimal_response_from_redis_cli() -> None:
    response = Response.from_json('{"id":"7-1","status":204}')
    assert (response.status, response.headers, response.body) == (204, {}, b"")
    multi = Response("x", 200, {"Set-Cookie": ["a=1", "b=2"]})
    assert multi.header_pairs() == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def test_guess_id_reads_broken_documents() -> None:
    assert guess_id(b'{"id": "7-42", "status": ') == "7-42"
    assert guess_id(b'{"id": "a\\"b"') == 'a"b'
    assert guess_id(b"garbage") is None


def test_route_forms() -> None:
    short = parse_route(r"GET,HEAD ^/hello/(?P<name>\w+)$ hello:req hello")
    assert short.methods == frozenset({"GET", "HEAD"})
    assert short.match("GET", "/hello/ann") == {"name": "ann"}
    assert short.match("POST", "/hello/ann") is None
    bare = parse_route("^/static/ files:req")
    assert (bare.name, bare.methods) == ("files:req", frozenset())
    assert bare.match("DELETE", "/static/x.css") == {}
    doc = parse_route('{"method": ["get"], "pattern": "^/a b$", "queue": "q", "name": "sp"}')
    assert doc.match("GET", "/a b") == {}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("GET ^/(x q", "invalid regex"),
        ("^/x", "expected"),
        ("GET ^/x q name extra", "expected"),
        ("^/x q bad/name", "bad name"),
        ('{"pattern": "^/"}', "required"),
        ('{"pattern": "^/", "queue": "q", "colour": 1}', "unknown field"),
    ],
)
def test_bad_routes_are_refused_with_the_reason(spec: str, problem: str) -> None:
    with pytest.raises(RouteError, match=problem):
        parse_route(spec)


def test_live_routes_come_first() -> None:
    table = RouteTable([parse_route("^/ static:req any")])
    assert table.match("GET", "/x")[0].name == "any"  # type: ignore[index]
    table.live = [parse_route("^/x live:req live")]
    assert table.match("GET", "/x")[0].name == "live"  # type: ignore[index]
    assert table.match("GET", "/y")[0].name == "any"  # type: ignore[index]


def test_redis_config_fills_only_unset_fields() -> None:
    settings = load_settings(GatewaySettings, {"timeout": 3.0}, env={})
    merged = overlay(settings, {"port": "9000", "timeout": "7", "bodyLimit": "10"}, origin="h")
    assert (merged.port, merged.timeout, merged.body_limit) == (9000, 3.0, 10)
    with pytest.raises(ConfigError, match="h port"):
        overlay(settings, {"port": "ninety"}, origin="h")
    with pytest.raises(ConfigError, match="h colour: unknown setting"):
        overlay(settings, {"colour": "blue"}, origin="h")


@pytest.mark.parametrize(
    ("status", "headers", "problem"),
    [
        (101, {}, "not a final status"),
        (199, {}, "not a final status"),
        (200, {"": "x"}, "not a header name"),
        (200, {"a b": "x"}, "not a header name"),
        (200, {"x": "a\r\nb: c"}, "control character"),
        (200, {"x": ["ok", "a\x00"]}, "control character"),
        (200, {"x": "☃"}, "not Latin-1"),
    ],
)
def test_answers_a_client_must_not_get_are_refused(
    status: int, headers: dict[str, str | list[str]], problem: str
) -> None:
    with pytest.raises(MessageError, match=problem):
        Response("x", status, headers).wire_headers()


def test_wire_headers_skip_and_repeat() -> None:
    response = Response("x", 200, {"X-A": "1\t2", "Content-Length": "9", "Set-Cookie": ["a", "b"]})
    assert response.wire_headers(frozenset({b"content-length"})) == [
        (b"x-a", b"1\t2"),
        (b"set-cookie", b"a"),
        (b"set-cookie", b"b"),
    ]


@pytest.mark.parametrize("reply", ["", "has space", "new\nline", "x" * 257, "caf\u00e9"])
def test_a_reply_key_of_the_wrong_shape_is_refused(reply: str) -> None:
    with pytest.raises(MessageError, match="reply"):
        Request.from_json(request(reply=reply).to_json())
