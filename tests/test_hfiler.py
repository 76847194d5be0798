"""hfiler behind hgateway → hrouter, as real processes on real Redis (standalone and Cluster)."""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisEnv
from tests.helpers import Spawner, run_cli, stopped, wait_until
from tests.webparts import NS, Web

FILES = "{w}:files"
CSS = "body { color: #333; }\n" * 40  # compressible, over gzip_min
BLOB = bytes(range(256)) * 4  # 1024 bytes for ranges


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "css").mkdir(parents=True)
    (root / "img").mkdir()
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "css" / "site.css").write_text(CSS)
    (root / "img" / "dot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (root / "blob.bin").write_bytes(BLOB)
    (root / "big.bin").write_bytes(bytes(5000))
    (tmp_path / "secret.txt").write_text("outside the root\n")
    (root / "link-out").symlink_to(tmp_path / "secret.txt")
    (root / "link-in").symlink_to(root / "index.html")
    return root


def start(
    env: RedisEnv,
    spawn: Spawner,
    root: Path,
    *extra: str,
    routes: tuple[str, ...] = (),
    gateway: tuple[str, ...] = ("--cache-bytes", "0"),  # hfiler answers every request
) -> Web:
    web = Web(env, spawn)
    web.gateway(*gateway)
    web.router(routes=[*routes, f"^/ {FILES} files"])
    filer = ["hfiler", *web.common(), "--in", FILES, "--root", str(root), "--ttl", "300"]
    filer += ["--max-size", "4096", "--metrics-interval", "0.2", *extra]
    web.handlers.append(spawn(*filer))
    web.wait_started_named("hfiler started")
    web.wait_serving("/index.html")
    return web


def test_validators_ranges_gzip_and_types(redis_env: RedisEnv, spawn: Spawner, site: Path) -> None:
    web = start(redis_env, spawn, site, "--gzip", "--ttl-pattern", "*.css=111")
    with httpx.Client(timeout=10) as client:
        home = client.get(web.url("/"))
        assert home.status_code == 200
        assert home.text == "<h1>home</h1>\n"
        assert home.headers["content-type"] == "text/html; charset=utf-8"
        etag, modified = home.headers["etag"], home.headers["last-modified"]
        assert client.get(web.url("/"), headers={"if-none-match": etag}).status_code == 304
        assert client.get(web.url("/"), headers={"if-none-match": '"other"'}).status_code == 200
        assert client.get(web.url("/"), headers={"if-modified-since": modified}).status_code == 304

        plain = client.get(web.url("/css/site.css"), headers={"accept-encoding": "identity"})
        assert plain.text == CSS
        assert "content-encoding" not in plain.headers
        assert plain.headers["vary"] == "Accept-Encoding"
        assert plain.headers["cache-control"] == "public, max-age=111"
        zipped = client.get(web.url("/css/site.css"), headers={"accept-encoding": "gzip, br"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.text == CSS  # httpx decodes it
        assert int(zipped.headers["content-length"]) < len(CSS) / 4
        assert zipped.headers["etag"] != plain.headers["etag"]
        refused = client.get(web.url("/css/site.css"), headers={"accept-encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
        gz_headers = {"accept-encoding": "gzip"}
        with client.stream("GET", web.url("/css/site.css"), headers=gz_headers) as streamed:
            assert gzip.decompress(b"".join(streamed.iter_raw())).decode() == CSS

        def ranged(spec: str) -> httpx.Response:
            return client.get(web.url("/blob.bin"), headers={"range": spec})

        first = ranged("bytes=0-9")
        assert (first.status_code, first.content) == (206, BLOB[:10])
        assert first.headers["content-range"] == "bytes 0-9/1024"
        assert ranged("bytes=-5").content == BLOB[-5:]
        assert ranged("bytes=1000-5000").content == BLOB[1000:]
        unsatisfiable = ranged("bytes=2000-")
        assert unsatisfiable.status_code == 416
        assert unsatisfiable.headers["content-range"] == "bytes */1024"
        assert ranged("bytes=0-1,5-6").status_code == 200  # several ranges: the whole file
        assert client.get(web.url("/img/dot.png")).headers["content-type"] == "image/png"
        assert client.post(web.url("/index.html")).status_code == 405
        assert client.get(web.url("/link-in")).text == "<h1>home</h1>\n"
        assert client.get(web.url("/big.bin")).status_code == 404  # over --max-size
    web.handlers[0].wait_for_log("big.bin is 5000 bytes, over max_size 4096: not served")


def test_expiry_and_changed_file_pickup(redis_env: RedisEnv, spawn: Spawner, site: Path) -> None:
    web = start(
        redis_env, spawn, site, "--ttl-pattern", "*.css=111", "--ttl-pattern", "*.png=5",
        "--expiry", "tests.http_handlers:expiry",
    )  # fmt: skip
    for path in ("/index.html", "/css/site.css", "/img/dot.png"):
        assert httpx.get(web.url(path), timeout=10).status_code == 200
    prefix = f"{NS}:hfiler"
    assert 295 <= redis_env.client.ttl(f"{prefix}:index.html") <= 300  # the default --ttl
    assert 105 <= redis_env.client.ttl(f"{prefix}:css/site.css") <= 111  # the pattern
    assert 36 <= redis_env.client.ttl(f"{prefix}:img/dot.png") <= 42  # the function wins
    served_from_redis = httpx.get(web.url("/index.html"), timeout=10)
    assert served_from_redis.text == "<h1>home</h1>\n"
    wait_until(lambda: int(redis_env.client.hget(f"{NS}:metrics:hfiler", "hit") or 0) >= 1)

    before = served_from_redis.headers["etag"]
    (site / "index.html").write_text("<h1>changed</h1>\n")
    stamp = (site / "index.html").stat().st_mtime + 5
    os.utime(site / "index.html", (stamp, stamp))
    after = httpx.get(web.url("/index.html"), timeout=10)
    assert after.text == "<h1>changed</h1>\n"
    assert after.headers["etag"] != before


def test_a_changed_file_shows_through_the_gateway_cache_within_its_cap(
    standalone_env: RedisEnv, spawn: Spawner, site: Path
) -> None:
    web = start(standalone_env, spawn, site, gateway=("--cache-max-age", "1"))
    with httpx.Client(timeout=10) as http:
        first = http.get(web.url("/index.html"))
        assert http.get(web.url("/index.html")).headers.get("age") is not None  # a cache hit
        (site / "index.html").write_text("<h1>changed again</h1>\n")
        stamp = (site / "index.html").stat().st_mtime + 5
        os.utime(site / "index.html", (stamp, stamp))
        began = time.monotonic()
        wait_until(lambda: http.get(web.url("/index.html")).text == "<h1>changed again</h1>\n")
    assert time.monotonic() - began < 3, "seen once the cached answer is a second old"
    assert first.text == "<h1>home</h1>\n"


def raw_get(port: int, path: str) -> int:
    """The status of GET ``path`` sent byte for byte (no client normalises it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(200)
    return int(head.split(b" ", 2)[1])


TRAVERSALS = [
    "/../secret.txt",
    "/css/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/css/%2e%2e/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/css%2f..%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/%5c..%5csecret.txt",
    "/%252e%252e/secret.txt",
    "/link-out",
    "/css/../link-out",
    "/index.html%00.png",
    "/./../secret.txt",
    "//../secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/css/",
    "/nope.html",
]


def test_path_traversal_attempts_are_all_404(
    redis_env: RedisEnv, spawn: Spawner, site: Path
) -> None:
    if redis_env.is_cluster:
        pytest.skip("path mapping does not touch Redis: once on standalone is enough")
    web = start(redis_env, spawn, site)
    statuses = {path: raw_get(web.ports[0], path) for path in TRAVERSALS}
    assert statuses == dict.fromkeys(TRAVERSALS, 404)
    assert raw_get(web.ports[0], "/css/site.css") == 200


def test_bad_root_is_a_clear_config_error(redis_env: RedisEnv, tmp_path: Path) -> None:
    result = run_cli("hfiler", "--redis", redis_env.url, "--root", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "root:" in result.stderr
    assert "is not a directory" in result.stderr


def test_requests_for_one_file_in_a_batch_share_one_redis_read(
    standalone_env: RedisEnv, spawn: Spawner, site: Path
) -> None:
    """Counting one server's commands needs one server: standalone only."""
    web = start(standalone_env, spawn, site, "--batch", "64", routes=(f"^/css/ {FILES} css",))
    client = standalone_env.client
    with httpx.Client(timeout=10) as http:
        assert http.get(web.url("/css/site.css")).status_code == 200  # loaded into Redis

    def reads() -> int:
        return int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))

    def routed() -> int:
        return int(client.hget(f"{NS}:metrics:hrouter:route:css", "count") or 0)

    filer = web.handlers[0]
    wait_until(lambda: routed() == 1, message="the first request's routing metrics")
    # Stopped, hfiler takes at most the first push of requests (its blocking pop was waiting
    # already); the rest queue up and arrive as one more batch when it goes on.
    filer.signal(signal.SIGSTOP)
    try:
        before = reads()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = [pool.submit(httpx.get, web.url("/css/site.css"), timeout=10)
                       for _ in range(32)]  # fmt: skip
            wait_until(lambda: routed() == 33, message="32 more requests routed to hfiler")
            filer.signal(signal.SIGCONT)
            bodies = {answer.result().text for answer in answers}
    finally:
        filer.signal(signal.SIGCONT)
    assert bodies == {CSS}
    assert reads() - before <= 2  # one per batch, not one per request
    wait_until(lambda: int(client.hget(f"{NS}:metrics:hfiler", "hit") or 0) == 32,
               message="a hit counted per request")  # fmt: skip


def test_hfiler_rides_out_a_redis_restart(
    standalone_env: RedisEnv, spawn: Spawner, site: Path
) -> None:
    """Redis gone and back: hfiler neither exits nor hangs, and serves the file again (reloaded
    into Redis if the restart lost it)."""
    web = start(standalone_env, spawn, site)
    url = web.url("/index.html")
    assert httpx.get(url, timeout=10).status_code == 200
    with stopped(standalone_env.server_for(FILES)):
        wait_until(
            lambda: httpx.get(url, timeout=10).status_code in (503, 504),
            message="the outage answered, not hung",
        )
    standalone_env.wait_healthy()
    wait_until(
        lambda: httpx.get(url, timeout=10).text == "<h1>home</h1>\n",
        timeout=30,
        message=lambda: "served after the restart\n" + web.handlers[0].log(),
    )
    filer = web.handlers[0]
    assert filer.alive
    wait_until(
        lambda: "back after" in filer.log(),
        message=lambda: "the outage seen and logged\n" + filer.log(),
    )
    assert "Traceback" not in filer.log()
