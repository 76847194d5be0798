"""hrender behind hgateway → hrouter, as real processes on real Redis (standalone and Cluster)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisEnv
from tests.helpers import Spawner, run_cli
from tests.webparts import NS, Web

PAGES = "{w}:pages"
USER = """<h1>{{ user.name }}</h1><p>{{ params.id }} {{ request.query.q }}</p>
<ul>{% for item in items or [] %}<li>{{ item }}</li>{% endfor %}</ul><i>{{ greeting }}</i>
"""


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "user.html").write_text(USER)
    (folder / "broken.html").write_text("{{ missing.attribute.deeper }}")
    (folder / "echo.html").write_text("<b>{{ body.title }}</b>")
    return folder


def start(env: RedisEnv, spawn: Spawner, templates: Path) -> Web:
    web = Web(env, spawn)
    web.gateway()
    web.router(
        routes=[
            f"GET ^/users/(?P<id>\\d+)$ {PAGES} user",
            f"^/broken$ {PAGES} broken",
            f"POST ^/echo$ {PAGES} echo",
            f"^/sandbox$ {PAGES} sandbox",
            f"^/unrouted$ {PAGES} unrouted",
        ]
    )
    render = ["hrender", *web.common(), "--in", PAGES, "--templates", str(templates)]
    render += ["--page", "user user.html user={u}:$id items={u}:$id:items greeting={u}:hi"]
    render += ["--page", "broken broken.html", "--page", "echo echo.html"]
    render += ["--page", "sandbox redis:evil"]
    web.handlers.append(spawn(*render))
    web.wait_started_named("hrender started")
    web.wait_serving("/users/0")
    return web


def test_pages_render_request_and_redis_data_escaped(
    redis_env: RedisEnv, spawn: Spawner, templates: Path
) -> None:
    redis_env.client.hset("{u}:7", mapping={"name": "<script>alert(1)</script>"})
    redis_env.client.rpush("{u}:7:items", "one", "<b>two</b>")
    redis_env.client.set("{u}:hi", "hello & welcome")
    web = start(redis_env, spawn, templates)
    page = httpx.get(web.url("/users/7?q=<i>x</i>"), timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>" in page.text
    assert "<script>" not in page.text
    assert "<li>one</li><li>&lt;b&gt;two&lt;/b&gt;</li>" in page.text
    assert "<p>7 &lt;i&gt;x&lt;/i&gt;</p>" in page.text
    assert "<i>hello &amp; welcome</i>" in page.text
    echoed = httpx.post(web.url("/echo"), json={"title": "<t>"}, timeout=10)
    assert echoed.text == "<b>&lt;t&gt;</b>"
    assert httpx.get(web.url("/unrouted"), timeout=10).status_code == 404


def test_template_errors_and_sandbox_fail_safely(
    redis_env: RedisEnv, spawn: Spawner, templates: Path
) -> None:
    web = start(redis_env, spawn, templates)
    broken = httpx.get(web.url("/broken"), timeout=10)
    assert broken.status_code == 500
    assert "missing" not in broken.text
    web.handlers[0].wait_for_log("page broken (broken.html) failed: UndefinedError")

    redis_env.client.hset(
        f"{NS}:templates", "evil", "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    )
    refused = httpx.get(web.url("/sandbox"), timeout=10)
    assert refused.status_code == 500
    assert "class" not in refused.text
    web.handlers[0].wait_for_log("SecurityError")

    redis_env.client.hset(f"{NS}:templates", "evil", "<p>{{ 6 * 7 }}</p>")
    assert httpx.get(web.url("/sandbox"), timeout=10).text == "<p>42</p>"  # changed live


def test_page_without_templates_dir_is_a_config_error(redis_env: RedisEnv) -> None:
    result = run_cli("hrender", "--redis", redis_env.url, "--page", "home home.html")
    assert result.returncode == 2
    assert "templates: page 'home' needs --templates DIR" in result.stderr
